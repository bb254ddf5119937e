"""Peak memory and time of `textebm evaluate`'s sampling and n-gram perplexities at scale.

    TEXTEBM_DATA=../shared/data python -m bench.eval_memory --run runs/study/ptb/default-ebm
    python -m bench.eval_memory --run RUN --num-samples 100000 --settings sample,streamed,held

What `evaluate` does, in two phases, each setting in its own process (peak RSS is per process):
`sample` draws the samples 10,000 at a time and appends them to samples.txt
(pipeline.evaluate.write_samples); `streamed` computes the 5-gram FPPL/RPPL reading that file as a
stream (lm_eval.perplexity.SampleFile: only int64 word ids are kept); `held` reads the same file
into lists of words first and passes the lists (how evaluate held its samples before), which
shows what streaming saves. `sample` runs first; the others reuse its file. The importance-
weighted NLL and latent diagnostics are left out (they do not grow with the number of
samples). Output goes to a temporary folder (or --keep DIR), never into the run. One JSON line
per setting.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path



def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def one(a) -> dict:
    import torch

    from lm_eval.perplexity import PPLConfig, SampleFile, perplexities
    from textebm.api import load
    from pipeline.evaluate import EvalConfig, write_samples
    from corpora.registry import load_corpus

    torch.set_num_threads(a.threads)
    tm = load(a.run)
    t = tm.config.train
    corpus = load_corpus(t.corpus, a.data_dir, t.max_len, t.on_long, t.train_split)
    base = rss_mb()
    out = Path(a.out)
    t0 = time.perf_counter()
    row = {"bench": "eval_memory", "setting": a.setting, "run": a.run, "num_samples": a.num_samples,
           "threads": a.threads, "rss_before_mb": round(base, 1)}
    if a.setting == "sample":
        write_samples(tm, out / "samples.txt", EvalConfig(num_samples=a.num_samples, seed=0))
    else:
        samples = SampleFile(out / "samples.txt")
        if a.setting == "held":
            samples = list(samples)
        res = perplexities(samples, corpus, PPLConfig(lm="ngram", order=5), progress=False)
        row.update(samples_scored=res["samples"], sample_tokens=res["tokens"]["fppl"],
                   fppl=round(res["fppl"], 2), rppl=round(res["rppl"], 2))
    return {**row, "peak_rss_mb": round(rss_mb(), 1), "seconds": round(time.perf_counter() - t0, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help="a trained run folder")
    ap.add_argument("--num-samples", type=int, default=100_000)
    ap.add_argument("--settings", default="sample,streamed,held")
    ap.add_argument("--keep", default=None, help="folder for samples.txt (default: a temporary one)")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--setting", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.setting:
        print(json.dumps(one(a)), flush=True)
        return
    with tempfile.TemporaryDirectory() as tmp:
        tmp = a.keep or tmp
        Path(tmp).mkdir(parents=True, exist_ok=True)
        for s in a.settings.split(","):
            cmd = [sys.executable, "-m", "bench.eval_memory", "--run", a.run, "--num-samples", str(a.num_samples),
                   "--threads", str(a.threads), "--setting", s, "--out", tmp]
            if a.data_dir:
                cmd += ["--data-dir", a.data_dir]
            subprocess.run(cmd, check=True)


if __name__ == "__main__":
    main()
