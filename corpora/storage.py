"""Files that must never be half-written or unpickled: atomic writes and weights-only loads.

Shared by textebm's run folders and lm_eval's LM folders (both depend on corpora, so this is the
one neutral place for it).
"""
from __future__ import annotations

import io
import json
import os
from pathlib import Path

import torch


class CheckpointError(Exception):
    """A missing, corrupted or mismatched checkpoint (reported in one line by the CLI)."""


def atomic_write(path: Path, data: bytes) -> None:
    """Write to a temporary file, fsync, then rename: readers see the old file or the new one."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


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
