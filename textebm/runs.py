"""Where runs live: `runs/<corpus>/<timestamp>/`, and `runs/latest` naming the newest run that
can be read: a folder becomes `latest` only once it holds a checkpoint (config.json, vocab.txt and
checkpoint.pt, each written atomically, so present means complete). A run that stops before its
first checkpoint leaves `latest` where it was: its folder is removed if the start failed, or kept
with `failed.txt` saying why (`settle_failed_run`)."""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

from common.interrupt import lock_owner
from common.storage import atomic_write, read_json as _json, read_jsonl
from textebm.checkpoint import CheckpointError

def runs_root() -> Path:
    """`$TEXTEBM_RUNS`, or `runs/` in the working folder."""
    return Path(os.environ.get("TEXTEBM_RUNS", "runs"))


def new_run_dir(corpus: str) -> Path:
    name = Path(corpus).name or "corpus"
    return runs_root() / name / time.strftime("%Y%m%d-%H%M%S")


FAILED = "failed.txt"   # a run that stopped before its first checkpoint: the error, kept
RUN_FILES = ("config.json", "vocab.txt", "checkpoint.pt")


def has_checkpoint(run_dir: Path) -> bool:
    """Whether `run_dir` holds what `textebm.load` reads (each file is written atomically)."""
    return all((Path(run_dir) / f).is_file() for f in RUN_FILES)


def mark_latest(run_dir: Path) -> bool:
    """Point runs/latest at `run_dir` if it holds a checkpoint; False (latest unchanged) if not."""
    if not has_checkpoint(run_dir):
        return False
    root = runs_root()
    root.mkdir(parents=True, exist_ok=True)
    atomic_write(root / "latest", (str(Path(run_dir).resolve()) + "\n").encode())
    return True


def settle_failed_run(run_dir: Path, created: bool, error: BaseException | None) -> str:
    """After `train` stopped on an error: 'latest' if the folder holds a checkpoint (marked latest:
    an interrupted or diverged run that saved one can be read and resumed); 'removed' if this
    command made the folder and no training step was recorded (a failed start: a missing split, a
    bad setting); else 'failed' (the folder kept, its error in failed.txt, latest unchanged)."""
    run_dir = Path(run_dir)
    if mark_latest(run_dir):
        return "latest"
    if not run_dir.is_dir():
        return "removed"
    metrics = run_dir / "metrics.jsonl"
    if created and not (metrics.is_file() and metrics.stat().st_size):
        shutil.rmtree(run_dir, ignore_errors=True)
        parent, root = run_dir.resolve().parent, runs_root().resolve()
        if parent != root and root in parent.parents:
            try:
                parent.rmdir()   # runs/<corpus>/ itself, if this was its only run
            except OSError:
                pass
        return "removed"
    why = f"{type(error).__name__}: {error}" if error is not None else "stopped"
    atomic_write(run_dir / FAILED, f"{why}\n".encode())
    return "failed"


def latest_run() -> Path:
    """The run runs/latest names. A marker left by an older version on a folder without a
    checkpoint falls back to the newest run under runs/ that has one."""
    marker = runs_root() / "latest"
    if not marker.is_file():
        raise CheckpointError(f"no run recorded in {marker}: train one (textebm train demo) "
                              "or pass --checkpoint DIR")
    run = Path(marker.read_text().strip())
    if has_checkpoint(run):
        return run
    ready = [c.parent for c in runs_root().rglob("checkpoint.pt") if has_checkpoint(c.parent)]
    if not ready:
        raise CheckpointError(f"{marker} names {run}, which holds no checkpoint, and no run under "
                              f"{runs_root()} has one: train one or pass --checkpoint DIR")
    return max(ready, key=lambda r: (r / "checkpoint.pt").stat().st_mtime)


def resolve(checkpoint: Path | None) -> Path:
    return Path(checkpoint) if checkpoint else latest_run()


def list_runs(root: Path) -> list[dict]:
    """One dict per run folder under `root` (any folder holding config.json, at any depth): corpus,
    recipe (prior, posterior start, prior sampler), steps, training seconds (without validation;
    summary.json's figure) and validation seconds (None for runs older than the split), the last
    validation's NLL/token and latent gap, FPPL/RPPL and NLL where evaluated, and the status:
    training (a live lock), finished (summary.json at its recorded length or time budget),
    failed (stopped before its first checkpoint: failed.txt), unknown (no metrics or summary),
    interrupted (anything else)."""
    out = []
    for cfg_path in sorted(Path(root).rglob("config.json")):
        run = cfg_path.parent
        try:
            cfg = json.loads(cfg_path.read_text())
        except (OSError, ValueError):
            continue
        if "train" not in cfg:
            continue
        lines = read_jsonl(run / "metrics.jsonl") if (run / "metrics.jsonl").exists() else []
        steps = [m for m in lines if m.get("kind") != "eval"]
        evals = [m for m in lines if m.get("kind") == "eval"]
        summary = _json(run / "summary.json")
        ev = _json(run / "eval.json")
        t, lc = cfg["train"], cfg.get("langevin", {})
        step = steps[-1]["step"] if steps else 0
        if lock_owner(run / ".lock") is not None:
            status = "training"
        elif (run / FAILED).is_file() and not (run / "checkpoint.pt").is_file():
            status = "failed"
        elif not lines and not summary:
            status = "unknown"   # no training record (a copied or hand-made folder)
        elif summary and (summary.get("step", 0) >= t["max_steps"] or t.get("time_budget")):
            status = "finished"
        else:
            status = "interrupted"
        # One training-time figure (train.py's clock: no validation): summary.json's where it
        # records the last step, else the last step's; validation's seconds beside it.
        train_s = steps[-1].get("seconds") if steps else None
        if summary.get("train_seconds") is not None and summary.get("step") == step:
            train_s = summary["train_seconds"]
        valid_s = summary.get("valid_seconds") if summary.get("step") == step else None
        if valid_s is None and any("valid_seconds" in m for m in evals):
            valid_s = sum(m.get("valid_seconds") or 0.0 for m in evals)
        out.append({
            "run": str(run), "corpus": t.get("corpus"),
            "recipe": t.get("recipe") or f"{cfg.get('prior', {}).get('kind', 'ebm')}/"
                      f"{lc.get('init1', 'noise')}/{lc.get('prior_sampler', 'chain')}",
            "steps": step, "max_steps": t["max_steps"],
            "train_seconds": train_s, "valid_seconds": valid_s,
            "val_nll_tok": evals[-1].get("val_recon_nll_tok") if evals else None,
            "val_gap": evals[-1].get("val_gap") if evals else None,
            "fppl": ev.get("fppl"), "rppl": ev.get("rppl"),
            "nll": (ev.get("nll") or {}).get("nll"), "status": status})
    return out

