"""What "within 3% of the data's NLL/token" compares with, and how precisely, on the demo corpus.
One JSON line per reference estimate, then one per run folder.

    python -m studies.demo_reference [RUN ...] [--sets 100] [--n 50000]

Reference lines: the grammar's entropy rate (demo.entropy_rate: n fresh sentences), each of the
three splits, and the spread of `--sets` disjoint 1,000-sentence estimates (what any one split
is), all with standard errors (demo.nll_per_token). Run lines: the run's prior samples
(RUN/samples.txt, as `textebm evaluate` wrote them) re-scored by the grammar, with their standard
error, against the entropy rate and against the valid split (the reference of earlier
measurements); `same_as_eval` checks the re-scoring against the run's eval.json.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from corpora import demo
from lm_eval.perplexity import SampleFile

LINE = 0.03  # the "within 3%"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="*")
    ap.add_argument("--sets", type=int, default=100, help="disjoint 1,000-sentence estimates")
    ap.add_argument("--n", type=int, default=50_000, help="sentences for the entropy rate")
    a = ap.parse_args()
    rate, rate_se = demo.entropy_rate(a.n)
    print(json.dumps({"reference": "entropy_rate", "sentences": a.n, "nll_tok": rate, "se": rate_se,
                      "line_3pct": rate * (1 + LINE)}))
    for name, split in demo.splits().items():
        r, se, _ = demo.exact_nll_rate(split)
        print(json.dumps({"reference": f"split_{name}", "sentences": len(split), "nll_tok": r,
                          "se": se, "z_vs_rate": (r - rate) / np.hypot(se, rate_se),
                          "line_3pct": r * (1 + LINE)}))
    sents = [t for _, t in demo.generate(1000 * a.sets, seed=31_337)]
    sets = np.array([demo.exact_nll_rate(sents[i:i + 1000])[:2] for i in range(0, len(sents), 1000)])
    print(json.dumps({"reference": "sets_of_1000", "sets": a.sets, "mean": float(sets[:, 0].mean()),
                      "sd": float(sets[:, 0].std(ddof=1)), "min": float(sets[:, 0].min()),
                      "max": float(sets[:, 0].max()), "median_se": float(np.median(sets[:, 1])),
                      "line_3pct_range": [float(sets[:, 0].min() * (1 + LINE)),
                                          float(sets[:, 0].max() * (1 + LINE))]}))
    valid_nll, valid_tokens = demo.true_nll(demo.splits()["valid"])
    valid = valid_nll / valid_tokens
    for run in map(Path, a.runs):
        path = run / "samples.txt"
        if not path.exists():
            print(json.dumps({"run": str(run), "error": "no samples.txt"}))
            continue
        r, se, bad = demo.exact_nll_rate(list(SampleFile(path)))
        ev = run / "eval.json"
        latent = json.loads(ev.read_text()).get("latent", {}) if ev.exists() else {}
        was = latent.get("samples_exact_nll_tok")
        print(json.dumps({"run": str(run), "samples_nll_tok": r, "se": se, "impossible_share": bad,
                          "vs_rate": r / rate - 1, "within_3pct": r <= rate * (1 + LINE),
                          "se_from_line": (rate * (1 + LINE) - r) / se,
                          "vs_valid": r / valid - 1, "within_3pct_of_valid": r <= valid * (1 + LINE),
                          "same_as_eval": None if was is None else bool(abs(was - r) < 1e-9)}))


if __name__ == "__main__":
    main()
