"""Topic probe of demo runs read three ways: one posterior chain, the posterior mean, g(x).

    python bench/topic_probe.py runs/study/demo/default-s0-ebm runs/study/demo/default-s1-ebm ...

For each trained demo run folder, one JSON line: the logistic-regression probe from z to the
true topic (1,000 fresh grammar sentences to fit, 500 to score; textebm.diagnostics.topic_probes)
with z from one posterior chain (what `textebm evaluate` reports as topic_probe_acc), from the
mean of 8 chains per sentence, and from the chain's amortized start g(x); the chains' scatter
(z_within_var) against the spread of the posterior means over sentences (z_between_var); the
run's prior, EBM learning rate, seed and precision. Budget: no training; about 40 s a run on one
thread.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from textebm.api import load  # noqa: E402
from textebm.diagnostics import topic_probes  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", help="demo run folders")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    for run in a.runs:
        tm = load(run)
        cfg = tm.config
        if cfg.train.corpus != "demo":
            sys.exit(f"{run}: a {cfg.train.corpus} run; the topic probe needs the demo grammar")
        t = time.time()
        res = topic_probes(tm.model, tm.vocab, a.seed)
        print(json.dumps({"bench": "topic_probe", "run": str(run), "prior": cfg.prior.kind,
                          "lr_prior": cfg.train.lr_prior, "seed": cfg.train.seed,
                          "precision": cfg.train.precision_used or cfg.train.precision,
                          "word_dropout": cfg.decoder.word_dropout, **res,
                          "seconds": round(time.time() - t, 1)}), flush=True)


if __name__ == "__main__":
    main()
