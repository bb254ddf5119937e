"""Benchmark: estimate a modified-KN n-gram LM on PTB train, score PTB test. Prints one JSON line.

    python -m bench.ngram --order 5
    python -m bench.ngram --order 5 --lmplz tools/kenlm-0.3.0/build/bin/lmplz --unk-as-word

`estimate_seconds` is `NGramLM.train` on already split sentences (counting, discounts,
probabilities; no ARPA written); `score_seconds` scores the test split; `peak_rss_mb` is this
process's peak resident memory. With `--lmplz` (or $LMPLZ) KenLM's lmplz estimates the
same order on the same training text (PTB's `<unk>` renamed `UNKWORD`, which lmplz requires) and
`lmplz_seconds` / `lmplz_peak_rss_mb` are its wall time (reading the text, estimating, writing
the ARPA file it produces) and peak memory; with `--unk-as-word` our
model gets the renamed text too and `lmplz_ppl` (its ARPA read by `NGramLM.from_arpa`, which
agrees with the kenlm module) is comparable with `ppl`.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import tempfile
import time
from pathlib import Path


from lm_eval.ngram import NGramLM

RENAMED_UNK = "UNKWORD"


def default_split(split: str) -> Path:
    base = Path(os.environ.get("TEXTEBM_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")
    return base / "ptb" / f"ptb.{split}.txt"


def read(path: Path, rename_unk: bool) -> list[list[str]]:
    with open(path, encoding="utf-8") as f:
        sents = [line.split() for line in f]
    if rename_unk:
        sents = [[RENAMED_UNK if w == "<unk>" else w for w in s] for s in sents]
    return sents


def find_lmplz(arg: str | None) -> str | None:
    if arg:
        return arg
    if os.environ.get("LMPLZ"):
        return os.environ["LMPLZ"]
    found = shutil.which("lmplz")
    if found:
        return found
    built = sorted(Path(__file__).resolve().parents[1].glob("tools/*/build/bin/lmplz"))
    return str(built[0]) if built else None


def run_lmplz(lmplz: str, order: int, train: list[list[str]], test: list[list[str]]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        text = Path(tmp) / "train.txt"
        text.write_text("".join(" ".join(s) + "\n" for s in train), encoding="utf-8")
        arpa = Path(tmp) / "lm.arpa"
        cmd = [lmplz, "-o", str(order), "-S", "20%", "-T", tmp]
        t0 = time.perf_counter()
        with open(text, "rb") as fin, open(arpa, "wb") as fout:
            subprocess.run(cmd, stdin=fin, stdout=fout, stderr=subprocess.DEVNULL, check=True)
        wall = time.perf_counter() - t0
        rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        ppl = NGramLM.from_arpa(arpa).score(test).ppl
    return {"lmplz": lmplz, "lmplz_cmd": " ".join(cmd[1:5]), "lmplz_seconds": wall,
            "lmplz_peak_rss_mb": rss, "lmplz_ppl_renamed_unk": ppl}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--order", type=int, default=5, help="n-gram order, 1..6 (default 5)")
    ap.add_argument("--train", type=Path, default=None,
                    help="training text, one sentence a line (default: PTB train from $TEXTEBM_DATA"
                         " or ../shared/data)")
    ap.add_argument("--test", type=Path, default=None, help="test text (default: PTB test)")
    ap.add_argument("--unk-as-word", action="store_true",
                    help="rename PTB's <unk> to UNKWORD on both sides (as lmplz must see it)")
    ap.add_argument("--lmplz", default=None,
                    help="lmplz binary to time on the same text (default: $LMPLZ, PATH, tools/)")
    ap.add_argument("--no-lmplz", action="store_true", help="do not run lmplz even if found")
    args = ap.parse_args()

    train_path = args.train or default_split("train")
    test_path = args.test or default_split("test")
    train = read(train_path, args.unk_as_word)
    test = read(test_path, args.unk_as_word)

    t0 = time.perf_counter()
    lm = NGramLM.train(train, order=args.order)
    t1 = time.perf_counter()
    res = lm.score(test)
    t2 = time.perf_counter()
    out = {
        "bench": "ngram", "order": args.order, "train": str(train_path), "test": str(test_path),
        "unk_as_word": args.unk_as_word, "cpu": platform.processor() or platform.machine(),
        "estimate_seconds": t1 - t0, "score_seconds": t2 - t1, "ppl": res.ppl,
        "tokens": res.tokens, "oov": res.oov, "sentences": res.sentences,
        "ngrams": lm.num_ngrams(), "discount_fallback_orders": lm.fallback_orders,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    lmplz = None if args.no_lmplz else find_lmplz(args.lmplz)
    if lmplz:
        renamed = ((train, test) if args.unk_as_word
                   else (read(train_path, True), read(test_path, True)))
        out.update(run_lmplz(lmplz, args.order, *renamed))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
