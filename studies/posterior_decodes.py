"""Where demo samples go wrong: the decoder, or the prior. One JSON line per run folder.

    python -m studies.posterior_decodes runs/study/demo/defaultk1-10-ebm runs/study/demo/...

For each trained demo run: 1,000 fresh grammar sentences, z from one posterior chain each (the
run's training chain), x ~ p(x|z) ancestrally, scored by the grammar (textebm.diagnostics.
posterior_decodes, also part of `textebm evaluate` on demo since it was added). Set beside the
prior samples' impossible share and exact NLL/token (latent_study rows), the difference is what
the prior adds by drawing z where the posterior does not put it (the prior hole). Budget: no
training; a few seconds per run on one thread.
"""
from __future__ import annotations

import argparse
import json
import sys

import torch

from textebm.api import load
from pipeline.demo_checks import posterior_decodes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", help="demo run folders")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    for run in a.runs:
        tm = load(run)
        if tm.config.train.corpus != "demo":
            sys.exit(f"{run}: a {tm.config.train.corpus} run; this needs the demo grammar")
        print(json.dumps({"bench": "posterior_decodes", "run": str(run), "seed": tm.config.train.seed,
                          **posterior_decodes(tm.model, tm.vocab, a.seed)}), flush=True)


if __name__ == "__main__":
    main()
