"""Files that must never be half-written or unpickled: atomic writes and weights-only loads.

Shared by textebm's run folders and lm_eval's LM folders (both depend on corpora, so this is the
one neutral place for it).
"""
from __future__ import annotations

import errno
import io
import json
import os
from pathlib import Path

import torch


class CheckpointError(Exception):
    """A missing, corrupted or mismatched checkpoint (reported in one line by the CLI)."""


class DiskFullError(CheckpointError):
    """A write failed for want of space (ENOSPC, a quota, a file-size limit); the file it was
    replacing is intact."""


SPACE_ERRORS = {errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC)}


def atomic_write(path: Path, data: bytes) -> None:
    """Write to a temporary file, fsync, then rename: readers see the old file or the new one.
    A full disk (or a file-size limit) removes the temporary file and raises DiskFullError
    naming the folder and the space the write needed; the old file stays as it was."""
    path = Path(path)
    # One temporary name per process: two writers of the same file (two runs marking runs/latest
    # at once) each rename their own whole file, where a shared name let one rename the other's.
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        if e.errno in SPACE_ERRORS:
            raise DiskFullError(
                f"no space to write {path.name} in {path.parent} ({len(data) / 1e6:.1f} MB needed; "
                f"{os.strerror(e.errno)}); the previous {path.name} is intact: free space, then "
                f"run the same command (or --resume) again") from None
        raise


def append_line(path: Path, line: str, f) -> None:
    """Append one line to the open text file f (of `path`); a full disk raises DiskFullError.
    A line cut short by a crash is what `read_jsonl` skips and `trim_jsonl` removes."""
    try:
        f.write(line + "\n")
        f.flush()
    except OSError as e:
        if e.errno in SPACE_ERRORS:
            raise DiskFullError(f"no space to append to {path.name} in {path.parent} "
                                f"({os.strerror(e.errno)}): free space, then --resume") from None
        raise


def read_jsonl(path: Path, warn=None) -> list[dict]:
    """The JSON objects of a .jsonl file, one per line; a line that does not parse (the last one
    cut by kill -9 or a full disk) is skipped, with `warn(message)` if given."""
    out = []
    for i, line in enumerate(Path(path).read_text(errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            if warn:
                warn(f"{path}: line {i} is not whole JSON (a write cut short?); skipped")
            continue
        if isinstance(obj, dict):
            out.append(obj)
    return out


def trim_jsonl(path: Path, keep) -> int:
    """Rewrite a .jsonl file (atomically) with only its whole lines for which keep(obj) holds;
    returns how many lines went (torn ones included)."""
    path = Path(path)
    if not path.exists():
        return 0
    lines = path.read_text(errors="replace").splitlines()
    kept = [json.dumps(o) for o in read_jsonl(path) if keep(o)]
    dropped = len([ln for ln in lines if ln.strip()]) - len(kept)
    if dropped:
        atomic_write(path, "".join(k + "\n" for k in kept).encode())
    return dropped


def read_json(path: Path) -> dict:
    """A JSON file's object, or {} where it is missing or unreadable (a run folder's optional
    summary.json, eval.json)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}


def write_json(path: Path, obj) -> None:
    atomic_write(path, (json.dumps(obj, indent=2) + "\n").encode())


def torch_bytes(obj) -> bytes:
    """`torch.save` of tensors and plain containers, in memory (for `atomic_write`)."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def load_tensors(path: Path, map_location="cpu", what: str = "checkpoint"):
    """`torch.load(weights_only=True)`: tensors and plain containers, never arbitrary objects."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated file, wrong format, pickled objects: all unusable
        raise CheckpointError(f"{path} is corrupted or not a {what} ({type(e).__name__})") from None
