"""Importance-weighted NLL of a latent-EBM model (PROTOCOL.md §4), and log Z(alpha).

    log p(x) ≈ logsumexp_m [ log p_alpha(z_m) + log p_beta(x|z_m) - log q(z_m|x) ] - log M,
    log p_alpha(z) = f_alpha(z) + log N(z; 0, I) - log Z(alpha),
    log Z(alpha)   = log E_{N(0,I)}[exp f_alpha(z)]   (Monte Carlo from N(0, I)),

with q a diagonal Gaussian fitted, per sentence, to the end points of several independent
short-run posterior chains (its spread widened by `widen` so that its tails cover the posterior's).

The whole PTB test split costs hours on a CPU core, so `importance_nll` can keep its progress in a
file (per-batch results and the generator's state, saved after each batch): a rerun over the same
sentences with the same settings resumes there and ends with the same numbers as one that was
never interrupted.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from corpora.batching import by_length, frame
from corpora.storage import atomic_write, load_tensors, torch_bytes
from textebm.decoder import MAX_LOGITS
from textebm.model import LatentEBM

LOG_2PI = math.log(2 * math.pi)


@dataclass
class NLLConfig:
    chains: int = 8           # posterior chains per sentence used to fit q
    samples: int = 100        # importance samples M per sentence
    widen: float = 1.5        # q's std = widen * std of the chain end points (+ min_std)
    min_std: float = 0.05
    logz_samples: int = 200_000
    batch_size: int = 32
    max_logits: int = MAX_LOGITS  # cap on rows x positions x vocabulary of one decoder call
    seed: int = 0


def log_partition(model: LatentEBM, n: int = 200_000, seed: int = 0,
                  chunk: int = 50_000) -> tuple[float, float]:
    """log Z(alpha) = log E_p0[exp f(z)] by Monte Carlo; returns (estimate, standard error).

    The standard error is the delta-method one: SE(mean w) / mean w, w = exp(f - max f).
    Exactly 0 for the Gaussian prior.
    """
    if model.prior is None:
        return 0.0, 0.0
    gen = torch.Generator(device=model.device).manual_seed(seed)
    fs = []
    with torch.no_grad():
        for i in range(0, n, chunk):
            z = torch.randn(min(chunk, n - i), model.latent_dim, generator=gen, device=model.device,
                            dtype=model.dtype)
            fs.append(-model.energy(z).double())
    f = torch.cat(fs)
    fmax = f.max()
    w = torch.exp(f - fmax)
    mean = w.mean()
    se = (w.std() / math.sqrt(len(w)) / mean).item()
    return (fmax + mean.log()).item(), se


def _log_normal(z: torch.Tensor, mu: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Diagonal Gaussian log density, summed over the last dim."""
    return (-0.5 * ((z - mu) / std).pow(2) - std.log() - 0.5 * LOG_2PI).sum(-1)


def sentence_log_marginals(model: LatentEBM, ids: list[list[int]], cfg: NLLConfig,
                           log_z: float, generator: torch.Generator
                           ) -> tuple[torch.Tensor, torch.Tensor]:
    """Importance-sampling estimates of log p(x) for a batch of id lists, and their Monte Carlo
    standard errors (delta method: SE(mean w) / mean w) -> two (B,) float64 tensors."""
    x = frame(ids).to(model.device)
    B, D, C, M = x.size(0), model.latent_dim, cfg.chains, cfg.samples
    z_chain, _ = model.infer(x.repeat_interleave(C, 0), generator=generator)
    z_chain = z_chain.view(B, C, D)
    mu = z_chain.mean(1, keepdim=True)                                     # (B, 1, D)
    std = cfg.widen * z_chain.std(1, keepdim=True) + cfg.min_std
    eps = torch.randn(B, M, D, generator=generator, device=model.device, dtype=model.dtype)
    z = mu + std * eps                                                     # (B, M, D)
    with torch.no_grad():
        flat = z.reshape(B * M, D)
        xs = x.repeat_interleave(M, 0)
        rows = max(1, model.decoder.token_cap(cfg.max_logits) // x.size(1))
        log_px = torch.cat([model.decoder.log_prob(xs[i:i + rows], flat[i:i + rows])
                            for i in range(0, B * M, rows)]).view(B, M)
        log_prior = (-model.prior_energy(flat) - 0.5 * D * LOG_2PI).view(B, M) - log_z
        log_q = _log_normal(z, mu, std)
        log_w = (log_px + log_prior - log_q).double()
    w = torch.exp(log_w - log_w.max(1, keepdim=True).values)              # (B, M), max 1
    se = w.std(1) / math.sqrt(M) / w.mean(1) if M > 1 else torch.full((B,), math.inf)
    return torch.logsumexp(log_w, 1) - math.log(M), se


def importance_nll(model: LatentEBM, ids: list[list[int]], cfg: NLLConfig = NLLConfig(),
                   progress=None, state_path: Path | None = None) -> dict:
    """NLL in nats per sentence and the matching perplexity over `ids` (word-id lists).

    Returns {nll, ppl, tokens, sentences, nll_se, nll_mc_se, log_z, log_z_se, chains, samples}.
    Two standard errors of `nll`: `nll_se` over sentences (std / sqrt(n): how much another test
    sample of this size would move it) and `nll_mc_se`, the estimator's own noise (the per-sentence
    importance-sampling errors, and log Z's, which shifts every sentence's NLL by the same amount).
    `state_path`: where progress is kept across interruptions (deleted once the estimate is done);
    it is only resumed from when it was made for the same sentences, settings and model.
    """
    model.eval()
    log_z, log_z_se = log_partition(model, cfg.logz_samples, cfg.seed)
    gen = torch.Generator(device=model.device).manual_seed(cfg.seed + 1)
    # The C chains of a batch run as one decoder call (forward and backward to z).
    per_batch = max(1, model.decoder.token_cap(cfg.max_logits) // cfg.chains)
    batches = list(by_length(ids, cfg.batch_size, per_batch))
    key = _progress_key(ids, cfg, log_z)
    done, nlls, ses = _resume(state_path, key, gen)
    for b in range(done, len(batches)):
        batch = [ids[j] for j in batches[b]]
        log_p, se = sentence_log_marginals(model, batch, cfg, log_z, gen)
        nlls.append(-log_p)
        ses.append(se)
        if state_path is not None:
            atomic_write(state_path, torch_bytes({"key": key, "batches": b + 1, "nll": torch.cat(nlls),
                                                  "se": torch.cat(ses), "gen": gen.get_state()}))
        if progress:
            progress(len(batch))
    nll, se = torch.cat(nlls), torch.cat(ses)
    n, total, tokens = len(ids), nll.sum().item(), sum(len(s) + 1 for s in ids)
    if state_path is not None:
        Path(state_path).unlink(missing_ok=True)
    return {"nll": total / n, "ppl": math.exp(total / tokens), "tokens": tokens, "sentences": n,
            "nll_se": (nll.std() / math.sqrt(n)).item() if n > 1 else math.inf,
            "nll_mc_se": math.sqrt(se.pow(2).sum().item() / n ** 2 + log_z_se ** 2),
            "log_z": log_z, "log_z_se": log_z_se, "chains": cfg.chains, "samples": cfg.samples}


def _progress_key(ids: list[list[int]], cfg: NLLConfig, log_z: float) -> str:
    """Fingerprint of what an NLL estimate depends on: the sentences, the settings, and (through
    log Z, computed afresh from the model) the prior."""
    h = hashlib.sha1(repr(asdict(cfg)).encode())
    for s in ids:
        h.update((",".join(map(str, s)) + ";").encode())
    return f"{h.hexdigest()} {log_z!r}"


def _resume(state_path: Path | None, key: str, gen: torch.Generator
            ) -> tuple[int, list[torch.Tensor], list[torch.Tensor]]:
    """(batches done, their per-sentence NLLs, their SEs) from a progress file made for `key`,
    with `gen` set to where it stood; nothing done when there is no such file."""
    if state_path is None or not Path(state_path).exists():
        return 0, [], []
    saved = load_tensors(Path(state_path), "cpu", "NLL progress file")
    if saved.get("key") != key:
        return 0, [], []
    gen.set_state(saved["gen"])
    return int(saved["batches"]), [saved["nll"]], [saved["se"]]
