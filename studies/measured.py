"""What the benchmarks that re-read a trained run share: the options of a `textebm evaluate`
measurement and one measurement of a model in memory into a folder of its own."""
from __future__ import annotations

import argparse
from pathlib import Path

from textebm.api import TextEBM
from pipeline.evaluate import EvalConfig, evaluate_run


def add_measure_options(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--samples", type=int, default=2000)
    ap.add_argument("--eval-sentences", type=int, default=300, help="diagnostics' test sentences")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--data-dir", default=None)


def measure_afresh(tm: TextEBM, corpus, out: Path, a: argparse.Namespace) -> dict:
    """`textebm evaluate` of `tm` (no NLL; 5-gram judges) into `out`, keeping nothing that an
    earlier measurement left there: eval.json, eval.md and samples.txt are all written anew."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "eval.json").unlink(missing_ok=True)
    return evaluate_run(tm, corpus, out, EvalConfig(
        num_samples=a.samples, lm="ngram", order=5, nll_sentences=-1,
        diag_sentences=a.eval_sentences, seed=a.seed))
