"""Benchmark: train the evaluator LSTM LM on PTB and score valid / test. Prints one JSON line.

    python -m bench.lstm_lm --data-dir ../shared/data --epochs 1 --max-batches 200

`seconds_per_epoch` is the training time of a full pass over PTB train, extrapolated from the
batches run when `--max-batches` cuts the epoch; `tok_s` counts scored training tokens (words and
`</s>`) per second of training; `peak_rss_mb` is the process's peak resident memory.
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import time

import torch


from corpora.batching import Batches
from corpora.registry import load_corpus
from corpora.vocab import Vocab
from lm_eval.lstm_lm import LSTMLMConfig, evaluate_ppl, train_lstm_lm


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--corpus", default="ptb", help="corpus name or folder (default: ptb)")
    ap.add_argument("--data-dir", default=None, help="folder holding ptb/ (else $TEXTEBM_DATA)")
    ap.add_argument("--epochs", type=int, default=1, help="epochs to train (max_epochs)")
    ap.add_argument("--max-batches", type=int, default=None, help="cut every epoch after N batches")
    ap.add_argument("--embed", type=int, default=300, help="embedding size")
    ap.add_argument("--hidden", type=int, default=300, help="LSTM hidden size")
    ap.add_argument("--batch-size", type=int, default=32, help="sentences per batch")
    ap.add_argument("--lr", type=float, default=1.0, help="SGD learning rate")
    ap.add_argument("--seed", type=int, default=0, help="seed of init, dropout and batch order")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--ckpt-dir", default=None, help="save after each epoch, resume from here")
    ap.add_argument("--no-test", action="store_true", help="skip scoring the test split")
    ap.add_argument("--progress", action="store_true", help="show a progress bar (on stderr)")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    corpus = load_corpus(args.corpus, data_dir=args.data_dir)
    train, valid = corpus.split("train"), corpus.split("valid")
    vocab = Vocab.build(train)
    cfg = LSTMLMConfig(embed=args.embed, hidden=args.hidden, batch_size=args.batch_size,
                       lr=args.lr, seed=args.seed, max_epochs=args.epochs)
    n_batches = len(Batches([[0]] * len(train), cfg.batch_size))
    t0 = time.perf_counter()
    model, history = train_lstm_lm(train, valid, vocab, cfg, device, progress=args.progress,
                                   ckpt_dir=args.ckpt_dir, max_batches=args.max_batches)
    wall = time.perf_counter() - t0
    last = history[-1] if history else {}
    train_s = sum(h["train_seconds"] for h in history)
    tokens = sum(h["train_tokens"] for h in history)
    batches_run = last.get("train_batches", n_batches)
    t1 = time.perf_counter()
    test = None if args.no_test else evaluate_ppl(model, corpus.split("test"), vocab, device)
    v = evaluate_ppl(model, valid, vocab, device)
    out = {
        "bench": "lstm_lm", "corpus": args.corpus, "device": str(device), "threads": args.threads,
        "torch": torch.__version__, "cpu": platform.processor() or platform.machine(),
        "config": cfg.to_dict(), "vocab": len(vocab), "epochs_run": len(history),
        "batches_per_epoch": n_batches, "batches_run_per_epoch": batches_run,
        "seconds_per_epoch": (train_s / len(history)) * n_batches / batches_run if history else None,
        "tok_s": tokens / train_s if train_s else None,
        "train_ppl_last_epoch": last.get("train_ppl"), "valid_ppl": v["ppl"],
        "test_ppl": test["ppl"] if test else None, "test_tokens": test["tokens"] if test else None,
        "eval_seconds": time.perf_counter() - t1, "wall_seconds": wall,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "history": history,
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
