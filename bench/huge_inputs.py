"""Peak memory and time of `textebm corpus info` and the first training iterations on huge
inputs: a 10^6-sentence training file, and a file with one 10^6-token line. One JSON line per
command (peak RSS of the child process, from wait4).

    python -m bench.huge_inputs [--sentences 1000000] [--steps 3] [--dir /tmp/huge]

The sentences are 20 tokens drawn from a 10,000-word vocabulary (Zipf-like), one file split
18/1/1 by line number as `textebm train FILE` does. The budget: one pass of each command.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def child(args: list[str]) -> dict:
    start = time.time()
    proc = subprocess.Popen([sys.executable, "-c", "from cli import app; app()", *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            cwd=Path(__file__).resolve().parents[1])
    _, status, usage = os.wait4(proc.pid, 0)
    err = proc.stderr.read().decode()[-300:]
    return {"command": " ".join(args), "rc": os.waitstatus_to_exitcode(status),
            "seconds": round(time.time() - start, 1), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
            "stderr_tail": err if os.waitstatus_to_exitcode(status) else ""}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sentences", type=int, default=1_000_000)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--dir", default="/tmp/textebm_huge")
    a = ap.parse_args()
    d = Path(a.dir)
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    words = np.array([f"w{i}" for i in range(10_000)])
    p = 1 / np.arange(1, 10_001)
    ids = rng.choice(10_000, size=(a.sentences, 20), p=p / p.sum())
    many = d / "many.txt"
    with open(many, "w") as f:
        for row in ids:
            f.write(" ".join(words[row]) + "\n")
    long = d / "long.txt"
    long.write_text("the cat sat .\n" * 1000 + "w " * 1_000_000 + "\n" + "a dog ran .\n" * 1000)
    base = {"sentences": a.sentences, "file_mb": round(many.stat().st_size / 1e6, 1)}
    for args in (["corpus", "info", str(many)],
                 ["train", str(many), "--max-steps", str(a.steps), "--out", str(d / "run"),
                  "--set", "train.eval_every=0", "--set", "train.batch_size=32", "--quiet", "--threads", "2"],
                 ["corpus", "info", str(long)]):
        print(json.dumps({**base, **child(args)}), flush=True)


if __name__ == "__main__":
    main()
