"""Benchmark full Algorithm 1 iterations (prior chain, posterior chain, both updates).

    python bench/train_step.py --data ../shared/data/ptb/ptb.train.txt [--batch-size 32] [--iters 5]

PTB sizes by default (embedding 128, hidden 512, vocabulary from FILE, K0=60 s0=0.4 K1=20 s1=0.1:
`--posterior paper`, so that both modes run the same chains; `--posterior encoder` times the
project default, which adds the amortized initializer's step). `--device cuda` times on a GPU.
`--mode ours` is textebm's trainer (length-bucketed batches, softmax only at real tokens, chain
gradients w.r.t. z only); `--mode plain` is a straightforward implementation of the same
algorithm (random batches, softmax at every padded position, `backward()` in the chains, which
also fills parameter gradients) for comparison. Same K, s and exact softmax in both.
Prints one JSON line: sec_per_iter, tokens_per_sec (real tokens, padding excluded), peak memory.
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from corpora.batching import Batches, frame, scored_tokens  # noqa: E402
from corpora.preprocess import read_sentences  # noqa: E402
from corpora.vocab import PAD_ID, Vocab  # noqa: E402
from textebm.config import apply_posterior_preset, for_corpus  # noqa: E402
from textebm.train import build_model, make_optimizers, train_step  # noqa: E402


def plain_log_prob(model, x, z):
    """log p(x|z) with the softmax over every (padded) position, masked afterwards."""
    dec = model.decoder
    inp, tgt = x[:, :-1], x[:, 1:]
    emb = dec.drop(dec.embed(inp))
    zz = z.unsqueeze(1).expand(-1, inp.size(1), -1)
    out, _ = dec.lstm(torch.cat([emb, zz], -1), dec._init_state(z))
    logp = F.log_softmax(dec.proj(dec.drop(out)), -1)
    tok = logp.gather(-1, tgt.unsqueeze(-1)).squeeze(-1)
    return (tok * (tgt != PAD_ID)).sum(1)


def plain_langevin(u_fn, z, steps, s):
    for _ in range(steps):
        z = z.detach().requires_grad_(True)
        u_fn(z).sum().backward()
        z = z - 0.5 * s * s * z.grad + s * torch.randn_like(z)
    return z.detach()


def plain_step(model, x, opts, cfg):
    lc = cfg.langevin
    model.train()
    z_neg = plain_langevin(model.prior_energy, torch.randn(x.size(0), 32, device=x.device),
                           lc.k0, lc.s0)
    z_pos = plain_langevin(lambda z: model.prior_energy(z) - plain_log_prob(model, x, z),
                           torch.randn(x.size(0), 32, device=x.device), lc.k1, lc.s1)
    for o in opts.values():
        o.zero_grad()
    loss = -plain_log_prob(model, x, z_pos).mean() + model.energy(z_pos).mean() \
        - model.energy(z_neg).mean()
    loss.backward()
    for o in opts.values():
        o.step()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="training text, one sentence per line")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--iters", type=int, default=5, help="timed iterations (after 1 warm-up)")
    ap.add_argument("--mode", choices=["ours", "plain"], default="ours")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--posterior", default="paper", help="posterior-chain preset (paper, sri, encoder)")
    a = ap.parse_args()
    dev = torch.device(a.device)

    def sync():  # CUDA runs asynchronously: time whole iterations
        if dev.type == "cuda":
            torch.cuda.synchronize()
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    sents = read_sentences(Path(a.data), "other", 400)
    vocab = Vocab.build(sents)
    ids = [vocab.encode(s) for s in sents]
    cfg = apply_posterior_preset(for_corpus("ptb"), a.posterior)
    cfg.decoder.vocab_size = len(vocab)
    model = build_model(cfg).to(dev)
    opts = make_optimizers(model, cfg)
    batches = Batches(ids, a.batch_size, seed=a.seed, bucket=a.mode == "ours").indices(0)
    step = train_step if a.mode == "ours" else plain_step
    secs, tokens = [], 0
    for i in range(a.iters + 1):
        x = frame([ids[j] for j in batches[i]]).to(dev)
        sync()
        t = time.perf_counter()
        step(model, x, opts, cfg)
        sync()
        if i:  # the first iteration warms up allocators and kernels
            secs.append(time.perf_counter() - t)
            tokens += int(scored_tokens(x).sum())
    print(json.dumps({"bench": "train_step", "mode": a.mode, "posterior": a.posterior,
                      "batch_size": a.batch_size,
                      "iters": a.iters, "threads": torch.get_num_threads(), "device": a.device,
                      "vocab": len(vocab), "sec_per_iter": round(float(np.mean(secs)), 4),
                      "tokens_per_sec": round(tokens / sum(secs), 2),
                      "peak_mem_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                      "peak_gpu_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1)
                      if dev.type == "cuda" else None}))


if __name__ == "__main__":
    main()
