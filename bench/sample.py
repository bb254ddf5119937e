"""Benchmark: sentences per second of the sampler (prior chain + ancestral decoding). One JSON line.

    python -m bench.sample                          # PTB-sized untrained model, runs anywhere
    python -m bench.sample --checkpoint runs/ptb/<timestamp>

The whole path of `textebm sample` through `TextEBM.sample_chains`: z_0 ~ N(0, I), K Langevin
steps on U0(z) = E(z) + ||z||^2/2, then one sentence per z by ancestral sampling, `--num` at once.
Without --checkpoint the model has PTB's sizes (vocabulary 10k, embedding 128, hidden 512,
EBM 32-200-200-1) and random weights; the `</s>` logit gets a bias so that sentence lengths are
geometric with PTB's mean (~22 tokens incl. `</s>`) instead of always running to --max-len.
`peak_rss_mb` is the process's peak resident memory (resource maxrss).
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import resource
import time

import torch


from corpora.vocab import EOS_ID, PAD_ID, SPECIALS, Vocab
from textebm.api import TextEBM, load
from textebm.config import for_corpus
from textebm.model import LatentEBM

PTB_MEAN_TOKENS = 22.0  # words + </s> per PTB training sentence


def untrained_ptb(seed: int) -> TextEBM:
    torch.manual_seed(seed)
    cfg = for_corpus("ptb")
    cfg.decoder.vocab_size = 10000
    vocab = Vocab(list(SPECIALS) + [f"w{i}" for i in range(10000 - len(SPECIALS))])
    model = LatentEBM(cfg.prior, cfg.decoder, cfg.langevin, cfg.encoder)
    with torch.no_grad():  # p(</s>) ~ 1/22 per step against ~uniform logits over the rest
        model.decoder.proj.bias[EOS_ID] = math.log((len(vocab) - 1) / (PTB_MEAN_TOKENS - 1))
    return TextEBM(model, vocab, cfg)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--checkpoint", default=None, help="run folder (default: untrained PTB-sized model)")
    ap.add_argument("--num", type=int, default=1000, help="sentences to sample (default 1000)")
    ap.add_argument("--steps", type=int, default=100, help="prior Langevin steps K (default 100)")
    ap.add_argument("--max-len", type=int, default=100, help="longest sentence in tokens")
    ap.add_argument("--seed", type=int, default=0, help="seed of the chains and the decoder")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    m = load(args.checkpoint, device) if args.checkpoint else untrained_ptb(args.seed)
    m.model.to(device)
    m.sample_chains(8, steps=2, seed=args.seed, max_len=5)  # warm-up: allocator, kernels
    t0 = time.perf_counter()
    s = m.sample_chains(args.num, steps=args.steps, seed=args.seed, max_len=args.max_len)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    lengths = (s.ids != PAD_ID).sum(1).float()
    print(json.dumps({
        "bench": "sample", "model": args.checkpoint or "untrained PTB-sized (10k/128/512)",
        "num": args.num, "steps": args.steps, "decode": "sample", "max_len": args.max_len,
        "seconds": round(seconds, 3), "sentences_per_s": round(args.num / seconds, 1),
        "tokens_per_s": round(float(lengths.sum()) / seconds, 1),
        "mean_tokens": round(float(lengths.mean()), 2), "longest": int(lengths.max()),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "threads": args.threads, "device": str(device), "torch": torch.__version__,
        "python": platform.python_version()}))


if __name__ == "__main__":
    main()
