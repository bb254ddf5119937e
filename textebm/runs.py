"""Where runs live: `runs/<corpus>/<timestamp>/`, and `runs/latest` naming the newest one."""
from __future__ import annotations

import os
import time
from pathlib import Path

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
    tmp = root / "latest.tmp"
    tmp.write_text(str(Path(run_dir).resolve()) + "\n")
    tmp.replace(root / "latest")


def latest_run() -> Path:
    marker = runs_root() / "latest"
    if not marker.is_file():
        raise CheckpointError(f"no run recorded in {marker}: train one (textebm train demo) "
                              "or pass --checkpoint DIR")
    return Path(marker.read_text().strip())


def resolve(checkpoint: Path | None) -> Path:
    return Path(checkpoint) if checkpoint else latest_run()
