"""Which part of a run's weight average (train.ema) helps and which hurts: the run read four ways,
each measured by `textebm evaluate` (no NLL). One JSON line per run x reading.

    python -m studies.ema_parts runs/study/ptb/defaultps50pu2k150ema-ebm [RUN ...]
        [--readings average,last,average-decoder,average-prior] [--samples 2000]

Readings: `average` (every weight averaged: what `textebm.load` reads), `last` (the last
weights: `--last-weights`), `average-decoder` (decoder and amortized encoder averaged, the EBM's
last weights), `average-prior` (the EBM averaged, the rest last). The training is the same in
all four; only what is read differs. Each reading's eval.json, eval.md and samples.txt go to
RUN/ema_parts/READING/, so the run's own eval.json is left alone. Same sample seed for all.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from studies.measured import add_measure_options, measure_afresh
from corpora.registry import load_corpus
from textebm.api import load
from textebm.checkpoint import load_checkpoint
from textebm.ema import EMA_KEY

# reading -> which state_dict keys come from the average (the others from the last weights)
READINGS = {
    "average": lambda k: True,
    "last": lambda k: False,
    "average-decoder": lambda k: not k.startswith("prior."),
    "average-prior": lambda k: k.startswith("prior."),
}


def mixed_state(payload: dict, reading: str) -> dict[str, torch.Tensor]:
    """The model's state_dict with each weight from the average or the last weights."""
    avg, last = payload[EMA_KEY], payload["model"]
    pick = READINGS[reading]
    return {k: (avg if pick(k) else last)[k] for k in last}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--readings", default=",".join(READINGS))
    add_measure_options(ap)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    readings = [r.strip() for r in a.readings.split(",")]
    if unknown := [r for r in readings if r not in READINGS]:
        raise SystemExit(f"unknown readings {unknown}; choose from {', '.join(READINGS)}")
    for run in map(Path, a.runs):
        payload = load_checkpoint(run)
        if not isinstance(payload.get(EMA_KEY), dict):
            raise SystemExit(f"{run}: the run kept no weight average (train.ema = 0)")
        tm = load(run, average=False)
        t = tm.config.train
        corpus = load_corpus(t.corpus, data_dir=a.data_dir, max_len=t.max_len, on_long=t.on_long,
                             train_split=t.train_split)
        for reading in readings:
            tm.model.load_state_dict(mixed_state(payload, reading))
            tm.weights = reading
            out = run / "ema_parts" / reading
            t0 = time.time()
            res = measure_afresh(tm, corpus, out, a)
            print(json.dumps({"bench": "ema_parts", "run": str(run), "reading": reading,
                              "fppl5": res["fppl"], "rppl5": res["rppl"],
                              "sample_noise": res["sample_noise"], **res.get("latent", {}),
                              "seconds": round(time.time() - t0, 1)}), flush=True)


if __name__ == "__main__":
    main()
