"""Where runs live: `runs/<corpus>/<timestamp>/`, and `runs/latest` naming the newest one."""
from __future__ import annotations

import json
import os
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


def mark_latest(run_dir: Path) -> None:
    root = runs_root()
    root.mkdir(parents=True, exist_ok=True)
    atomic_write(root / "latest", (str(Path(run_dir).resolve()) + "\n").encode())


def latest_run() -> Path:
    marker = runs_root() / "latest"
    if not marker.is_file():
        raise CheckpointError(f"no run recorded in {marker}: train one (textebm train demo) "
                              "or pass --checkpoint DIR")
    return Path(marker.read_text().strip())


def resolve(checkpoint: Path | None) -> Path:
    return Path(checkpoint) if checkpoint else latest_run()


def list_runs(root: Path) -> list[dict]:
    """One dict per run folder under `root` (any folder holding config.json, at any depth): corpus,
    recipe (prior, posterior start, prior sampler), steps, training seconds, the last
    validation's NLL/token and latent gap, FPPL/RPPL and NLL where evaluated, and the status:
    training (a live lock), finished (summary.json at its recorded length or time budget),
    unknown (no metrics or summary), interrupted (anything else)."""
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
        elif not lines and not summary:
            status = "unknown"   # no training record (a copied or hand-made folder)
        elif summary and (summary.get("step", 0) >= t["max_steps"] or t.get("time_budget")):
            status = "finished"
        else:
            status = "interrupted"
        out.append({
            "run": str(run), "corpus": t.get("corpus"),
            "recipe": t.get("recipe") or f"{cfg.get('prior', {}).get('kind', 'ebm')}/"
                      f"{lc.get('init1', 'noise')}/{lc.get('prior_sampler', 'chain')}",
            "steps": step, "max_steps": t["max_steps"],
            "train_seconds": steps[-1].get("seconds") if steps else None,
            "val_nll_tok": evals[-1].get("val_recon_nll_tok") if evals else None,
            "val_gap": evals[-1].get("val_gap") if evals else None,
            "fppl": ev.get("fppl"), "rppl": ev.get("rppl"),
            "nll": (ev.get("nll") or {}).get("nll"), "status": status})
    return out

