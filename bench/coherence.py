"""Is a trained run's prior one distribution with its posterior codes? PROTOCOL.md §2c's three
checks (textebm.diagnostics.prior_coherence) for each run and prior sampler, one JSON line each.

    python -m bench.coherence runs/demo/s0 [RUN ...] [--samplers chain,mala] [--sentences 500]

The budget per line: 2,000 prior samples (the run's K0 steps), 1,000 descents of 200 Adam steps
on U0, AIS log Z at 10,000 temperatures (3 x 500 chains), 200,000 plain Monte Carlo draws; codes
from the run's reading chain on the first --sentences test sentences.
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from corpora.registry import load_corpus
from textebm.api import load
from textebm.diagnostics import prior_coherence


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--samplers", default="chain,mala")
    ap.add_argument("--sentences", type=int, default=500)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    for run in a.runs:
        tm = load(run)
        ids = tm.encode(load_corpus(tm.config.train.corpus, data_dir=a.data_dir)
                        .split("test")[:a.sentences]).ids
        for sampler in a.samplers.split(","):
            start = time.time()
            r = prior_coherence(tm.model, ids, a.seed, sampler=sampler)
            print(json.dumps({"run": run, "sampler": sampler, "trained_with": tm.config.langevin.prior_sampler,
                              **r, "seconds": round(time.time() - start, 1)}), flush=True)


if __name__ == "__main__":
    main()
