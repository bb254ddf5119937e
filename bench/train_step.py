"""Benchmark full Algorithm 1 iterations: textebm's trainer against a plain implementation,
side by side in one process on identical batches.

    python -m bench.train_step --data ../shared/data/ptb/ptb.train.txt [--batch-size 32] [--iters 5]
                               [--precision fp32|bf16|auto] [--modes ours,plain]
    python -m bench.train_step --data ... --modes ours:fp32,ours:bf16,plain   # all three at once
    python -m bench.train_step --data ... --modes ours:fp32,ours:fp32+compile  # prior chain compiled
    python -m bench.train_step --data ... --sizes-of demo --posterior encoder \
        --modes "ours,ours@train.prior_updates=2@langevin.k0=100"         # settings side by side
    python -m bench.train_step --data ... --posterior pretrained --batch-size 64 \
        --modes 'pretrain,ours,ours@langevin.init1="amortized"@langevin.k1=0'   # amortized inference

PTB sizes by default (embedding 128, hidden 512, vocabulary from FILE, K0=60 s0=0.4 K1=20 s1=0.1:
`--posterior paper`, so that both modes run the same chains; `--posterior encoder` times the
project default, which adds the amortized initializer's step). `--device cuda` times on a GPU.
`ours` is textebm's `train_step` (softmax only at real tokens through the fused softmax of
common/softmax.py, chain gradients w.r.t. z only, decoder at `--precision`); `plain` is a
straightforward fp32 implementation of the same algorithm (nn.Linear + log_softmax at every padded
position, `backward()` in the chains, which also fills parameter gradients). Same K, s, exact
softmax and the same batches (`--batches`: random sentences, or the trainer's length-bucketed
batches) in both; the modes alternate
batch by batch, each with its own model and optimizers from the same initial weights.
`pretrain` times `pretrain_step` (the autoencoder iteration of train.pretrain_steps) instead.
`@SECTION.KEY=JSON` after an `ours` mode overrides a setting for that mode only (e.g. the prior
chain's length or the EBM updates per iteration), so settings are timed against each other.
Prints one JSON line per mode (sec_per_iter, tokens_per_sec over real tokens), then one with the
tokens/s ratios (each mode over `plain`, and over `ours:fp32` where it ran), peak memory and, for
bf16, the relative error of the posterior-chain gradient dU/dz against fp32 on the first batch.
"""
from __future__ import annotations

import argparse
import copy
import json
import resource
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from corpora.batching import Batches, frame, scored_tokens
from corpora.preprocess import read_sentences
from corpora.vocab import PAD_ID, Vocab
from textebm.config import build_config, override, parse_settings
from common.precision import DTYPES, cpu_name, resolve
from textebm.model import build_model
from textebm.train import make_optimizers, pretrain_step, train_step


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


def chain_grad(model, x, z):
    """dU1/dz at z for x, the quantity every posterior step computes. -> (B, D)"""
    z = z.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(model.posterior_energy(z, x).sum(), z)
    return g


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="training text, one sentence per line")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--iters", type=int, default=5, help="timed iterations per mode (after 1 warm-up)")
    ap.add_argument("--modes", default="ours,plain",
                    help="comma-separated: ours (at --precision), ours:fp32, ours:bf16, plain; "
                         "'+compile' after an ours mode runs its prior chain compiled; "
                         "'@SECTION.KEY=JSON' (repeatable) overrides a setting for that mode")
    ap.add_argument("--precision", default="fp32", help="ours: fp32, bf16 or auto")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--posterior", default="paper", help="posterior-chain preset (paper, sri, encoder)")
    ap.add_argument("--sizes-of", default="ptb", help="whose default model sizes to use (ptb, demo, ...)")
    ap.add_argument("--batches", choices=["random", "bucketed"], default="random",
                    help="random: sentences drawn at random (what a plain trainer sees); bucketed: "
                         "the textebm trainer's length-sorted batches (little padding for either)")
    a = ap.parse_args()
    dev = torch.device(a.device)
    modes = [m.strip() for m in a.modes.split(",") if m.strip()]

    def sync():  # CUDA runs asynchronously: time whole iterations
        if dev.type == "cuda":
            torch.cuda.synchronize()
    if a.threads:
        torch.set_num_threads(a.threads)
    sents = read_sentences(Path(a.data), "other", 400)
    vocab = Vocab.build(sents)
    ids = [vocab.encode(s) for s in sents]
    cfg = build_config(a.sizes_of, a.posterior)
    cfg.decoder.vocab_size = len(vocab)
    precision, why = resolve(a.precision, dev)
    runs, prec, cfgs = {}, {}, {}
    for m in modes:
        head, *sets = m.split("@")
        base, plus, opt = head.partition("+")
        kind, _, p = base.partition(":")
        if kind not in ("ours", "pretrain", "plain") or (p and kind == "plain") or \
                (plus and (opt != "compile" or kind == "plain")):
            raise SystemExit(f"unknown mode {m!r}: ours, ours:fp32, ours:bf16 (each optionally "
                             f"+compile), pretrain (the same) or plain")
        if sets and kind == "plain":
            raise SystemExit(f"{m!r}: settings (@...) apply to ours modes only")
        cfgs[m] = override(copy.deepcopy(cfg), parse_settings(sets))
        prec[m] = resolve(p, dev)[0] if p else (precision if kind != "plain" else "fp32")
        torch.manual_seed(a.seed)  # same initial weights in every mode
        model = build_model(cfgs[m], dev, prec[m], bool(plus))
        step = {"ours": train_step, "pretrain": pretrain_step, "plain": plain_step}[kind]
        runs[m] = (model, make_optimizers(model, cfgs[m]), step)
    batches = Batches(ids, a.batch_size, seed=a.seed, bucket=a.batches == "bucketed").indices(0)
    extra = {}
    low = next((m for m in modes if m.startswith("ours") and prec[m] != "fp32"), None)
    if low is not None:
        x = frame([ids[j] for j in batches[0]]).to(dev)
        model = runs[low][0].eval()
        z = torch.randn(x.size(0), cfg.prior.latent_dim, device=dev)
        g_low = chain_grad(model, x, z)
        model.decoder.compute_dtype = torch.float32
        g32 = chain_grad(model, x, z)
        model.decoder.compute_dtype = DTYPES[prec[low]]
        extra["chain_grad_rel_err"] = round(float((g_low - g32).norm() / g32.norm()), 5)
    secs = {m: [] for m in modes}
    tokens = {m: 0 for m in modes}
    for i in range(a.iters + 1):
        x = frame([ids[j] for j in batches[i]]).to(dev)
        for m, (model, opts, step) in runs.items():
            sync()
            t = time.perf_counter()
            step(model, x, opts, cfgs[m])
            sync()
            if i:  # the first iteration warms up allocators and kernels
                secs[m].append(time.perf_counter() - t)
                tokens[m] += int(scored_tokens(x).sum())
    common = {"bench": "train_step", "sizes_of": a.sizes_of, "posterior": a.posterior, "batches": a.batches,
              "batch_size": a.batch_size,
              "iters": a.iters, "threads": torch.get_num_threads(), "device": a.device, "cpu": cpu_name(),
              "vocab": len(vocab)}
    tps = {}
    for m in modes:
        tps[m] = tokens[m] / sum(secs[m])
        print(json.dumps({**common, "mode": m, "precision": prec[m],
                          "compile_failed": getattr(runs[m][0].prior._compiled, "failed", None)
                          if m.endswith("+compile") else None,
                          "sec_per_iter": round(float(np.mean(secs[m])), 4),
                          "tokens_per_sec": round(tps[m], 2)}))
    summary = {**common, "mode": "ratios", "precision": precision, "precision_why": why, **extra,
               "peak_mem_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
               "peak_gpu_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1)
               if dev.type == "cuda" else None}
    # tokens/s of every mode over the plain implementation's and over fp32 ours, where run
    for base in ("plain", "ours:fp32"):
        if base in tps:
            for m in modes:
                if m != base and m != "plain":
                    summary[f"{m}_over_{base}"] = round(tps[m] / tps[base], 3)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
