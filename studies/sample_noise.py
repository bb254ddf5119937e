"""Prior-chain noise when drawing samples (`[langevin] sample_noise0`). One JSON line per run x noise.

    python -m studies.sample_noise runs/study/demo/default-ebm runs/study/demo/default-gaussian
    python -m studies.sample_noise --noises 1,0.8,0.6,0.4 RUN_DIR [RUN_DIR ...]
    python -m studies.sample_noise --noises 0.9 --steps 100,200,400 RUN_DIR   # the chain's length

The model is trained once (training chains keep noise0 = 1); only the chain that draws the
samples changes. For each trained run, chain length K (`--steps`; default the run's K0) and
noise scale c: n prior samples (K steps at noise c; a fixed N(0, I) prior is sampled exactly as
N(0, c^2 I), the same chain's stationary law), ancestral decoding, then 5-gram FPPL / RPPL of
the samples (lm_eval) and, on demo, the share the grammar cannot emit and their exact NLL/token. The same seed for every setting, so the rows differ only
by c. Budget: --samples (default 2,000), one torch thread.
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from corpora.registry import load_corpus
from lm_eval.perplexity import PPLConfig, perplexities
from pipeline import demo_checks
from textebm.api import load


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+", help="run folders")
    ap.add_argument("--noises", default="1,0.8,0.6,0.4")
    ap.add_argument("--steps", default="", help="comma list of prior-chain lengths (default: the run's K0)")
    ap.add_argument("--samples", type=int, default=2000)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    for run in a.runs:
        tm = load(run)
        corpus = load_corpus(tm.config.train.corpus, data_dir=a.data_dir)
        lengths = [int(v) for v in a.steps.split(",")] if a.steps else [tm.config.langevin.k0]
        for k, c in ((k, float(v)) for k in lengths for v in a.noises.split(",")):
            t0 = time.time()
            s = tm.sample_chains(a.samples, steps=k, seed=a.seed, noise=c)
            sentences = [x.split() for x in s.sentences if x]
            row = {"run": run, "prior": tm.config.prior.kind, "steps": k, "noise": c, "samples": a.samples,
                   "z_norm": float(s.z.norm(dim=-1).mean()), "energy": float(s.energy.mean())}
            if corpus.name == "demo":
                row.update(demo_checks.grammar_checks([x.split() for x in s.sentences]))
            res = perplexities(sentences, corpus, PPLConfig(lm="ngram", order=5), progress=False)
            row.update(fppl5=res["fppl"], rppl5=res["rppl"], seconds=round(time.time() - t0, 1))
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
