"""Which posterior chain reads the topic: the same trained demo models, inferred with other chains.

    python bench/posterior_chain.py runs/study/demo/default-s0-ebm ... [--chains default,noise0,...]

No training: for each trained demo run and each chain setting (step-size schedule, noise scale and
number K1 of posterior steps, started from the run's amortized guess g(x)), one JSON line with
the topic probe read from one chain and from the mean of 8 chains, the chains' scatter against the
spread of the posterior means (textebm.diagnostics.topic_probes), and the NLL/token of 300 valid
sentences at z from that chain (a better posterior fit reads lower). It asks whether the single-
chain probe's spread between seeds comes from the trained model or from the chain used to read it.
Budget: about 1 min per (run, chain) on one thread.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from corpora import demo  # noqa: E402
from textebm.api import load  # noqa: E402
from textebm.config import SRI_SCHEDULE  # noqa: E402
from textebm.diagnostics import recon_nll, topic_probes  # noqa: E402

# name -> (step-size schedule, noise scale, steps K1); the first is the default preset's chain.
CHAINS = {
    "default": (SRI_SCHEDULE, 0.2, 20),
    "noise0": (SRI_SCHEDULE, 0.0, 20),
    "noise0.1": (SRI_SCHEDULE, 0.1, 20),
    "half": ([s / 2 for s in SRI_SCHEDULE], 0.2, 20),
    "const0.2": ([0.2], 0.2, 20),
    "const0.1": ([0.1], 0.2, 20),
    "tail": (SRI_SCHEDULE[4:], 0.2, 20),
    "k10": (SRI_SCHEDULE, 0.2, 10),
    "k5": (SRI_SCHEDULE, 0.2, 5),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", help="demo run folders")
    ap.add_argument("--chains", default=",".join(CHAINS), help=f"comma-separated, of {list(CHAINS)}")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    names = [c for c in a.chains.split(",") if c]
    if bad := [c for c in names if c not in CHAINS]:
        sys.exit(f"unknown chains {bad}; use {list(CHAINS)}")
    for run in a.runs:
        tm = load(run)
        lc = tm.model.langevin_cfg
        valid = [tm.vocab.encode(s) for s in demo.splits()["valid"][:300]]
        for name in names:
            sched, lc.noise1, lc.k1 = CHAINS[name]
            lc.s1_schedule = list(sched)
            t = time.time()
            res = topic_probes(tm.model, tm.vocab, a.seed)
            res["nll_tok_posterior_z"] = recon_nll(tm.model, valid, a.seed)
            print(json.dumps({"bench": "posterior_chain", "run": str(run), "chain": name,
                              "schedule": lc.s1_schedule, "noise1": lc.noise1, "k1": lc.k1,
                              "seed": tm.config.train.seed, **res,
                              "seconds": round(time.time() - t, 1)}), flush=True)


if __name__ == "__main__":
    main()
