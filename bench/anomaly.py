"""The paper's anomaly use (§4.4) on demo: do a run's scores rank sentences the grammar cannot
emit below those it can? Real test sentences against copies with two words swapped that the
grammar cannot emit; AUROC of `textebm score`'s scores, one JSON line per run and score.

    python -m bench.anomaly runs/demo/s0 [RUN ...] [--sentences 200] [--full]

Scores: log p(x, z) at the posterior z (`--fast`), total and per token, and with --full the
importance-weighted log p(x) (textebm.nll defaults); `paired` is the share of real sentences
that outscore their own corrupted copy (same length).
"""
from __future__ import annotations

import argparse
import json

import torch

from corpora import demo as grammar
from corpora.registry import load_corpus
from textebm.api import load
from textebm.score import auroc, score_sentences


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--sentences", type=int, default=200)
    ap.add_argument("--full", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    real = load_corpus("demo").split("test")[:a.sentences]
    pairs = grammar.swapped_impossible(real)
    bad = [c for _, c in pairs]
    n = len(real)
    for run in a.runs:
        tm = load(run)
        for fast in ([True, False] if a.full else [True]):
            rows, shared = score_sentences(tm, real + bad, fast=fast)
            key = "log_p_xz" if fast else "log_p"
            for per_token in (False, True):
                sc = [r[f"{key}_per_token" if per_token else key] for r in rows]
                print(json.dumps({"run": run, "score": key + ("_per_token" if per_token else ""),
                                  "real": n, "corrupted": len(bad),
                                  "auroc": auroc(sc[:n], sc[n:]),
                                  "paired": sum(sc[k] > sc[n + j] for j, (k, _) in enumerate(pairs)) / len(pairs),
                                  **({} if fast else {"log_z": shared["log_z"]})}), flush=True)


if __name__ == "__main__":
    main()
