"""Topic probe of demo runs read three ways (one posterior chain, the posterior mean, g(x)), with
the run's own posterior chain or with others.

    python -m studies.topic_probe runs/study/demo/default-s0-ebm runs/study/demo/default-s1-ebm ...
    python -m studies.topic_probe RUN ... --chains k20,noise0,tail,k10   # the same models, other chains

For each trained demo run folder and each chain, one JSON line: the logistic-regression probe from
z to the true topic (1,000 fresh grammar sentences to fit, 500 to score;
pipeline.demo_checks.topic_probes) with z from one posterior chain (what `textebm evaluate` reports
as topic_probe_acc), from the mean of 8 chains per sentence, and from the chain's amortized start
g(x); the chains' scatter (z_within_var) against the spread of the posterior means over sentences
(z_between_var); the NLL/token of 300 valid sentences at z from that chain (a better posterior fit
reads lower); the run's prior, EBM learning rate, seed and precision. `--chains` swaps the
posterior chain (step-size schedule, noise scale, K1) for named others without retraining, which
asks whether a probe reading comes from the trained model or from the chain used to read it.
Budget: no training; about 1 min per (run, chain) on one thread.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from corpora import demo
from textebm.api import load
from textebm.config import READ_SCHEDULE, SRI_SCHEDULE
from pipeline.demo_checks import topic_probes
from textebm.diagnostics import recon_nll

# name -> (step-size schedule, noise scale, steps K1). `own` is the run's chain (its reading chain
# where it has one, as `infer` runs it); `k20` is the
# default chain before K1 became 10 (recorded as `default` in studies/results/posterior_chain_demo.jsonl).
CHAINS = {
    "k20": (SRI_SCHEDULE, 0.2, 20),
    "noise0": (SRI_SCHEDULE, 0.0, 20),
    "noise0.1": (SRI_SCHEDULE, 0.1, 20),
    "half": ([s / 2 for s in SRI_SCHEDULE], 0.2, 20),
    "const0.2": ([0.2], 0.2, 20),
    "const0.1": ([0.1], 0.2, 20),
    "tail": (SRI_SCHEDULE[4:], 0.2, 20),
    "k10": (SRI_SCHEDULE, 0.2, 10),
    "k5": (SRI_SCHEDULE, 0.2, 5),
    "tail10": (SRI_SCHEDULE[4:], 0.2, 10),
    "tail10-noise0": (READ_SCHEDULE, 0.0, 10),  # the default reading chain (config.READ_SCHEDULE)
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", help="demo run folders")
    ap.add_argument("--chains", default="own", help=f"comma-separated: own (the run's chain) or of {list(CHAINS)}")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    names = [c for c in a.chains.split(",") if c]
    if bad := [c for c in names if c != "own" and c not in CHAINS]:
        sys.exit(f"unknown chains {bad}; use own or {list(CHAINS)}")
    for run in a.runs:
        tm = load(run)
        cfg = tm.config
        if cfg.train.corpus != "demo":
            sys.exit(f"{run}: a {cfg.train.corpus} run; the topic probe needs the demo grammar")
        valid = [tm.vocab.encode(s) for s in demo.splits()["valid"][:300]]
        lc = tm.model.langevin_cfg  # the loaded model's own copy: changed here, never saved
        for name in names:
            if name != "own":
                sched, lc.noise1, lc.k1 = CHAINS[name]
                lc.s1_schedule = list(sched)
                lc.read_schedule, lc.read_noise1 = [], None  # read with this chain
            t = time.time()
            res = topic_probes(tm.model, tm.vocab, a.seed)
            res["nll_tok_posterior_z"] = recon_nll(tm.model, valid, a.seed)
            print(json.dumps({"bench": "topic_probe", "run": str(run), "chain": name,
                              "schedule": lc.posterior_step_sizes(read=True),
                              "noise1": lc.posterior_noise(read=True), "k1": lc.k1,
                              "prior": cfg.prior.kind, "lr_prior": cfg.train.lr_prior,
                              "seed": cfg.train.seed,
                              "precision": cfg.train.precision_used or cfg.train.precision,
                              "word_dropout": cfg.decoder.word_dropout, **res,
                              "seconds": round(time.time() - t, 1)}), flush=True)


if __name__ == "__main__":
    main()
