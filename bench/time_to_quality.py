"""Wall-clock to a fixed validation NLL/token: the `paper` posterior preset against the default.

    python -m bench.time_to_quality --data-dir ../shared/data [--train-sentences 5000]
        [--budget 1200] [--eval-every 20] [--presets paper,encoder] [--precision fp32]

Both settings train on the same PTB subset (the first --train-sentences training sentences; the
vocabulary is built from them) with PTB model sizes, in one process, alternating iteration by
iteration, so that they share the machine's conditions. Only `train_step` is timed; every
--eval-every iterations each model is scored on the first --valid-sentences validation sentences:
NLL/token of x at z from the run's own posterior chain (`diagnostics.recon_nll`, fixed seed), the
quantity the trainer logs as "val". --budget is the training seconds each setting gets.

Prints one JSON line per evaluation, then one summary line per setting with the training seconds
it needed to reach --target (default: the best validation NLL the first preset reached within its
budget) and the speed-up of each over the first preset.
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from corpora.batching import Batches, frame, scored_tokens
from corpora.registry import load_corpus
from corpora.vocab import Vocab
from textebm.config import build_config
from textebm.diagnostics import recon_nll
from common.precision import resolve
from textebm.model import build_model
from textebm.train import make_optimizers, train_step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=None, help="folder with ptb/ (default: $TEXTEBM_DATA)")
    ap.add_argument("--presets", default="paper,encoder", help="posterior presets to compare")
    ap.add_argument("--train-sentences", type=int, default=5000)
    ap.add_argument("--valid-sentences", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--budget", type=float, default=1200, help="training seconds per setting")
    ap.add_argument("--eval-every", type=int, default=20)
    ap.add_argument("--target", type=float, default=None, help="validation NLL/token to reach")
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    corpus = load_corpus("ptb", a.data_dir)
    train = corpus.train[: a.train_sentences]
    vocab = Vocab.build(train)
    train_ids = [vocab.encode(s) for s in train]
    valid_ids = [vocab.encode(s) for s in corpus.split("valid")[: a.valid_sentences]]
    precision, _ = resolve(a.precision, "cpu")
    presets = [p.strip() for p in a.presets.split(",") if p.strip()]
    runs = {}
    for name in presets:
        cfg = build_config("ptb", name)
        cfg.decoder.vocab_size = len(vocab)
        cfg.train.batch_size = a.batch_size
        torch.manual_seed(a.seed)
        model = build_model(cfg, "cpu", precision)
        runs[name] = {"cfg": cfg, "model": model, "opts": make_optimizers(model, cfg),
                      "secs": 0.0, "step": 0, "curve": []}
    batches = Batches(train_ids, a.batch_size, seed=a.seed)
    common = {"bench": "time_to_quality", "train_sentences": len(train), "vocab": len(vocab),
              "batch_size": a.batch_size, "precision": precision, "threads": torch.get_num_threads()}

    def evaluate(name, r):
        nll = recon_nll(r["model"], valid_ids, a.seed + 1)
        r["curve"].append((r["secs"], r["step"], nll))
        print(json.dumps({**common, "preset": name, "step": r["step"],
                          "train_seconds": round(r["secs"], 1), "val_nll_tok": round(nll, 4)}),
              flush=True)

    for name, r in runs.items():
        evaluate(name, r)
    while any(r["secs"] < a.budget for r in runs.values()):
        for name, r in runs.items():
            if r["secs"] >= a.budget:
                continue
            epoch, pos = divmod(r["step"], len(batches))
            x = frame([train_ids[i] for i in batches.indices(epoch)[pos]])
            t = time.perf_counter()
            train_step(r["model"], x, r["opts"], r["cfg"])
            r["secs"] += time.perf_counter() - t
            r["step"] += 1
            r["tokens"] = r.get("tokens", 0) + int(scored_tokens(x).sum())
            if r["step"] % a.eval_every == 0:
                evaluate(name, r)
    first = runs[presets[0]]["curve"]
    target = a.target if a.target is not None else min(n for _, _, n in first)
    reach = {name: next(((s, k) for s, k, n in r["curve"] if n <= target), (None, None))
             for name, r in runs.items()}
    base = reach[presets[0]][0]
    for name, r in runs.items():
        secs, step = reach[name]
        print(json.dumps({**common, "preset": name, "summary": True, "target_nll_tok": round(target, 4),
                          "seconds_to_target": None if secs is None else round(secs, 1),
                          "steps_to_target": step, "steps": r["step"],
                          "sec_per_iter": round(r["secs"] / max(r["step"], 1), 3),
                          "best_val_nll_tok": round(min(n for _, _, n in r["curve"]), 4),
                          "speedup_vs_first": None if secs is None or base is None or not secs
                          else round(base / secs, 2)}))


if __name__ == "__main__":
    main()
