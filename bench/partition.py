"""Convergence of log Z(alpha) on trained runs: AIS at a growing number of temperatures, beside
plain Monte Carlo from N(0, I). One JSON line per run x estimator setting.

    python -m bench.partition runs/demo/s0 [RUN ...] [--temperatures 500,1000,2000,4000,8000]
        [--chains 200] [--runs 3] [--plain 10000,200000,2000000] [--threads 2]

AIS is a stochastic lower bound of log Z: a converged setting reads the same at twice the
temperatures and its independent runs agree (spread); plain Monte Carlo reads far below while its
effective sample size is a few draws. The budget: temperatures x (runs x chains + pilot) MALA
steps of the EBM per line.
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from textebm.api import load
from textebm.ais import AISConfig, ais_log_z, plain_mc_log_z


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--temperatures", default="500,1000,2000,4000,8000")
    ap.add_argument("--chains", type=int, default=200)
    ap.add_argument("--runs", dest="n_runs", type=int, default=3)
    ap.add_argument("--plain", default="10000,200000,2000000")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    for run in a.runs:
        m = load(run).model
        if m.prior.exact:  # log Z = 0 exactly
            continue
        for n in [int(v) for v in a.plain.split(",") if v]:
            t = time.time()
            r = plain_mc_log_z(m.energy, m.latent_dim, n, a.seed)
            print(json.dumps({"run": run, **r, "seconds": round(time.time() - t, 2)}), flush=True)
        for temps in [int(v) for v in a.temperatures.split(",") if v]:
            r = ais_log_z(m.energy, m.latent_dim, AISConfig(temperatures=temps, chains=a.chains,
                                                            runs=a.n_runs, seed=a.seed))
            print(json.dumps({"run": run, **r}), flush=True)


if __name__ == "__main__":
    main()
