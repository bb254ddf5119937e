"""Importance-weighted NLL of a latent-EBM model (PROTOCOL.md §4), with checks it cannot fool.

    log p(x) ≈ logsumexp_m [ log p_alpha(z_m) + log p_beta(x|z_m) - log q(z_m|x) ] - log M,
    log p_alpha(z) = f_alpha(z) + log N(z; 0, I) - log Z(alpha),

log Z(alpha) by annealed importance sampling (textebm.ais), and q fitted per sentence to the
model's real posterior p(z|x) ∝ exp(-U1(z)), U1 = E(z) + ||z||^2/2 - log p(x|z) (noise 1, whatever
temperature the training chain runs at):
  1. C starts: the run's own chain start (g(x), or N(0, I)) and C - 1 draws from N(0, I); each
     descends U1 with Adam to its mode;
  2. q0 is the even mixture over the C modes of isotropic Gaussians N(mode, sigma^2 I), sigma per
     mode the one of a grid with the highest evidence lower bound. (A Laplace fit does not work
     here: a learned E is piecewise linear, the codes sit at its kinks, where U1 rises like |t|
     in every direction, and a finite-difference Hessian is whatever its step makes it; the
     bound picks the scale the posterior has.) The M samples are split evenly over the
     components (the deterministic-mixture estimator, unbiased with the mixture as q);
  3. with `temperatures` > 0, AIS from q0 to the posterior (MALA at noise 1 at every
     temperature, step sizes tuned by a pilot pass) replaces plain importance sampling from q0:
     unbiased for p(x) too, with weights of lower variance (bench/nll_proposal.py measures both).
Reported with it: each sentence's effective sample size (sum w)^2 / sum w^2 of its weights, and
a floor no likelihood can cross, −log p(x) ≥ min_z −log p(x|z) (p(x) is an average of p(x|z)):
the smallest −log p(x|z) found by Adam descent from the modes and at every importance sample.
A sentence whose estimate sits below its floor is counted as a violation: with a floor found by
descent that is a strong sign of an estimator bug (most often log Z too low), not a proof.

The whole PTB test split costs hours on a CPU core, so `importance_nll` can keep its progress in a
file (per-batch results and the generator's state, saved after each batch): a rerun over the same
sentences with the same settings resumes there and ends with the same numbers as one that was
never interrupted.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch

from corpora.batching import by_length, frame
from common.storage import atomic_write, load_tensors, torch_bytes
from textebm.decoder import MAX_LOGITS
from textebm.langevin import descend
from textebm.model import LatentEBM, frozen
from textebm.ais import AISConfig, ais_log_z, anneal, ess, plain_mc_log_z, sigmoid_schedule

LOG_2PI = math.log(2 * math.pi)
# The estimator's name in results files; "plain_mc_narrow_q" named the one before it (log Z by
# plain Monte Carlo, q fitted to the training chain at its own temperature).
ESTIMATOR = "ais_logz+elbo_scaled_mode_mixture_q"
Q_ESTIMATOR = "ais_logz+amortized_q"   # importance sampling from the posterior's own q(z|x)


@dataclass
class NLLConfig:
    chains: int = 4            # C: starts (and q0's mixture components) per sentence
    descent: int = 50          # Adam steps on U1 from each start
    descent_lr: float = 0.1
    scales: tuple[float, ...] = (0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.0)  # q0's sigma, by ELBO
    fit_samples: int = 8       # draws per mode and scale that choose sigma
    temperatures: int = 50     # AIS temperatures from q0 to the posterior (0: plain IS from q0;
                               # bench/results/nll_proposal_demo.jsonl: 0 reads 2.3 nats high)
    step_size: float = 0.1     # the AIS pilot's first MALA step size
    samples: int = 20          # importance samples (AIS chains) M per sentence, a multiple of C
    floor_steps: int = 50      # Adam steps on -log p(x|z) for the floor (0: no floor)
    floor_lr: float = 0.05
    ais: AISConfig = field(default_factory=AISConfig)
    plain_mc_draws: int = 200_000  # plain Monte Carlo log Z, reported beside AIS (0: skip)
    proposal: str = "auto"     # auto: the posterior's own q(z|x) where it has one (amortized
                               # runs), else the fitted mode mixture (+ AIS); "fitted": always that
    q_samples: int = 500       # importance samples per sentence from q(z|x) (the text-VAE standard)
    batch_size: int = 32
    max_logits: int = MAX_LOGITS  # cap on rows x positions x vocabulary of one decoder call
    seed: int = 0

    def __post_init__(self):
        # The M AIS chains are split evenly over the C starts, so M must be a multiple of C: say
        # so when the config is built, not after log Z's minutes of AIS.
        if self.proposal not in ("auto", "fitted") or self.q_samples < 1:
            raise ValueError(f"proposal must be auto or fitted and q_samples >= 1, got "
                             f"{self.proposal!r}, {self.q_samples}")
        if self.samples < 1 or self.samples % self.chains:
            raise ValueError(f"importance samples must be a positive multiple of the {self.chains} "
                             f"chains that start each sentence's AIS, got {self.samples}")


# Per-sentence pieces of the target, both on z: (B, K, D) -> (B, K): U0(z) = E(z) + ||z||^2/2
# (the prior energy, without log Z) and -log p(x_b|z).
Fn = Callable[[torch.Tensor], torch.Tensor]


def _log_mixture(z: torch.Tensor, loc: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """log q0(z) of the even mixture of N(loc_c, sigma_c^2 I): z: (B, M, D), loc: (B, C, D),
    sigma: (B, C) -> (B, M)."""
    d = z.size(-1)
    r2 = (z.unsqueeze(2) - loc.unsqueeze(1)).pow(2).sum(-1) / sigma.unsqueeze(1).pow(2)  # (B, M, C)
    log_c = -0.5 * r2 - d * sigma.log().unsqueeze(1) - 0.5 * d * LOG_2PI
    return torch.logsumexp(log_c, 2) - math.log(loc.size(1))


def _fit_scale(u_target: Fn, modes: torch.Tensor, cfg: NLLConfig, gen: torch.Generator
               ) -> torch.Tensor:
    """Per mode, the isotropic Gaussian N(mode, sigma^2 I) with the highest evidence lower bound
    mean[log p~(z) - log q(z)] over cfg.scales (cfg.fit_samples draws each, common random
    numbers). The posterior is no Gaussian: a learned E is piecewise linear (LeakyReLU), and the
    codes sit at its kinks, where U1 rises like |t| in every direction and a Hessian is whatever
    the finite-difference step makes it; one scale per mode, chosen by the bound, is robust to
    that, and AIS takes it the rest of the way. modes: (B, C, D) -> sigma: (B, C)."""
    B, C, D = modes.shape
    n = cfg.fit_samples
    eps = torch.randn(B, C, n, D, generator=gen, device=modes.device, dtype=modes.dtype)
    best, sigma = None, None
    for s in cfg.scales:
        z = (modes.unsqueeze(2) + s * eps).reshape(B, C * n, D)
        with torch.no_grad():
            log_q = -0.5 * eps.pow(2).sum(-1) - D * math.log(s) - 0.5 * D * LOG_2PI  # (B, C, n)
            elbo = (-u_target(z).view(B, C, n) - log_q).double().mean(2)            # (B, C)
        take = elbo > best if best is not None else torch.ones_like(elbo, dtype=torch.bool)
        best = elbo if best is None else torch.where(take, elbo, best)
        sigma = (torch.full_like(elbo, s) if sigma is None else torch.where(take, s, sigma))
    return sigma


def log_marginals(u0: Fn, nll_x: Fn, starts: torch.Tensor, log_z: float, cfg: NLLConfig,
                  gen: torch.Generator) -> dict[str, torch.Tensor]:
    """log p(x_b) for B targets p(z|x_b) ∝ exp(-u0(z) - nll_x(z)), prior exp(-u0) N-normalised
    by log Z; starts: (B, C, D). Returns (B,) tensors: log_p, se (the importance estimate's
    delta-method standard error), ess, and floor (min found of nll_x; inf without floor_steps)."""
    B, C, D = starts.shape
    M = cfg.samples   # a multiple of C: NLLConfig checks it
    if C != cfg.chains:
        raise ValueError(f"starts has {C} chains per sentence, the config {cfg.chains}")

    def u1(z):
        return u0(z) + nll_x(z)

    modes, _ = descend(u1, starts, cfg.descent, cfg.descent_lr)           # (B, C, D)

    def u_target(z):  # -log [p_alpha(z) p(x|z)]: its integral is p(x)
        return u0(z) + 0.5 * D * LOG_2PI + log_z + nll_x(z)

    sigma = _fit_scale(u_target, modes, cfg, gen).to(modes.dtype)      # (B, C)

    def u_init(z):  # -log q0(z): the mixture over the modes, normalised
        return -_log_mixture(z, modes, sigma)

    def draw(n):  # n/C from each component: (B, n, D)
        eps = torch.randn(B, C, n // C, D, generator=gen, device=modes.device, dtype=modes.dtype)
        return (modes.unsqueeze(2) + sigma[..., None, None] * eps).reshape(B, n, D)

    zs = draw(M)
    with torch.no_grad():
        nll_s = nll_x(zs).double()                                      # (B, M)
    if cfg.temperatures:   # AIS from q0 to the posterior (one MALA step per temperature)
        betas = sigmoid_schedule(cfg.temperatures)
        _, steps, _ = anneal(u_init, u_target, draw(C), betas, None, gen, cfg.step_size)
        log_w, _, _ = anneal(u_init, u_target, zs, betas, steps, gen)
    else:                  # plain importance sampling from q0
        with torch.no_grad():
            log_w = (u_init(zs) - u_target(zs)).double()
    se = _relative_se(log_w)
    ess_b = ess(log_w)
    if cfg.floor_steps:
        _, found = descend(nll_x, modes, cfg.floor_steps, cfg.floor_lr)
        floor = torch.minimum(found.min(1).values, nll_s.min(1).values)
    else:
        floor = torch.full((B,), math.inf, dtype=torch.float64, device=modes.device)
    return {"log_p": torch.logsumexp(log_w, 1) - math.log(M), "se": se, "ess": ess_b,
            "floor": floor}


def _relative_se(log_w: torch.Tensor) -> torch.Tensor:
    """The delta-method standard error of log mean_m w_m from log weights (B, M): sd(w) /
    (sqrt(M) mean(w)) per row; inf for a single weight."""
    M = log_w.size(1)
    w = torch.exp(log_w - log_w.max(1, keepdim=True).values)
    return w.std(1) / math.sqrt(M) / w.mean(1) if M > 1 else torch.full_like(w[:, 0], math.inf)


def rows_per_sentence(cfg: NLLConfig, with_q: bool) -> int:
    """Decoder rows one sentence takes in one call: its q draws, or its C descents and M AIS
    chains (batches are sized so that rows x positions stay within the token cap)."""
    return cfg.q_samples if with_q else max(cfg.chains, cfg.samples if cfg.temperatures else 1)


def q_log_marginals(u0: Fn, nll_x: Fn, q, log_z: float, cfg: NLLConfig,
                    gen: torch.Generator) -> dict[str, torch.Tensor]:
    """log p(x_b) by importance sampling from a proposal q (textebm.posterior: `sample`,
    `log_prob`, `mu`: (B, D)) with cfg.q_samples draws: log w = log p(z) + log p(x|z) - log q(z|x),
    log p(z) = -U0(z) - (D/2) log 2 pi - log Z. Returns (B,) log_p, se, ess, floor (as
    `log_marginals`) and elbo, the mean of log w: a lower bound on log p(x) in expectation."""
    M = cfg.q_samples
    zs = q.sample(M, gen)                                                  # (B, M, D)
    D = zs.size(-1)
    with torch.no_grad():
        nll_s = nll_x(zs).double()                                         # (B, M)
        log_w = (-u0(zs) - 0.5 * D * LOG_2PI - log_z).double() - nll_s - q.log_prob(zs).double()
    se = _relative_se(log_w)
    floor = nll_s.min(1).values
    if cfg.floor_steps:
        _, found = descend(nll_x, q.mu[:, None], cfg.floor_steps, cfg.floor_lr)
        floor = torch.minimum(found.min(1).values, floor)
    return {"log_p": torch.logsumexp(log_w, 1) - math.log(M), "se": se, "ess": ess(log_w),
            "floor": floor, "elbo": log_w.mean(1)}


def _model_fns(model: LatentEBM, x: torch.Tensor, max_logits: int) -> tuple[Fn, Fn]:
    """u0 and nll_x of `log_marginals` for the sentences x: (B, T) of a LatentEBM. nll_x scores
    z: (B, K, D) as B*K decoder rows, cut into calls of at most max_logits logits."""
    rows = max(1, model.decoder.token_cap(max_logits) // x.size(1))

    def u0(z):
        return model.prior_energy(z.reshape(-1, z.size(-1))).view(z.shape[:2])

    def nll_x(z):
        B, K, D = z.shape
        xs, flat = x.repeat_interleave(K, 0), z.reshape(B * K, D)
        lp = torch.cat([model.decoder.log_prob(xs[i:i + rows], flat[i:i + rows])
                        for i in range(0, B * K, rows)])
        return -lp.view(B, K)

    return u0, nll_x


def sentence_log_marginals(model: LatentEBM, ids: list[list[int]], cfg: NLLConfig,
                           log_z: float, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """`log_marginals` for a batch of id lists: (B,) log_p, se, ess, floor (float64)."""
    x = frame(ids).to(model.device)
    B, C, D = x.size(0), cfg.chains, model.latent_dim
    q = _proposal(model, x, cfg)
    u0, nll_x = _model_fns(model, x, cfg.max_logits)
    if q is not None:
        with frozen(model):
            out = q_log_marginals(u0, nll_x, q, log_z, cfg, generator)
    else:
        starts = torch.randn(B, C, D, generator=generator, device=model.device, dtype=model.dtype)
        starts[:, 0] = model.chain_start(x, generator)
        with frozen(model):
            out = log_marginals(u0, nll_x, starts, log_z, cfg, generator)
        out["elbo"] = torch.full((B,), math.nan, dtype=torch.float64)
    return {k: v.double().cpu() for k, v in out.items()}


def _proposal(model: LatentEBM, x: torch.Tensor, cfg: NLLConfig):
    """The posterior's own q(z|x) where cfg.proposal allows it and the posterior has one."""
    return model.posterior.proposal(x) if cfg.proposal == "auto" else None


def uses_q(model: LatentEBM, ids: list[list[int]], cfg: NLLConfig) -> bool:
    """Whether `importance_nll` samples from the posterior's q(z|x) for this model (asked of
    its first sentence)."""
    return bool(ids) and _proposal(model, frame(ids[:1]).to(model.device), cfg) is not None


def partition(model: LatentEBM, ais: AISConfig, plain_mc_draws: int = 200_000, seed: int = 0
              ) -> dict:
    """log Z of the run's prior: AIS (`log_z`, the value used, with its runs, spread, ESS) and
    plain Monte Carlo beside it (`plain_mc`; skipped at 0 draws). The Gaussian prior's log Z is
    exactly 0. Shared by the NLL and the coherence diagnostics."""
    if model.prior.exact:
        return {"log_z": 0.0, "estimator": f"exact ({model.prior.kind} prior is normalised)"}
    with frozen(model):
        # On the whitened coordinates (model.tilt): from N(0, I) there, for either base.
        res = ais_log_z(model.tilt, model.latent_dim, ais, model.device, model.dtype)
        if plain_mc_draws:
            res["plain_mc"] = plain_mc_log_z(model.tilt, model.latent_dim, plain_mc_draws,
                                             seed, model.device, model.dtype)
    return res


def importance_nll(model: LatentEBM, ids: list[list[int]], cfg: NLLConfig = NLLConfig(),
                   progress=None, state_path: Path | None = None) -> dict:
    """NLL in nats per sentence and the matching perplexity over `ids` (word-id lists).

    Returns {nll, ppl, tokens, sentences, nll_se, nll_mc_se, log_z (AIS, with its runs' spread,
    effective sample sizes and plain Monte Carlo beside it), ess (of the importance weights, over
    sentences), floor (the min_z -log p(x|z) check), estimator, settings}.
    Two standard errors of `nll`: `nll_se` over sentences (std / sqrt(n): how much another test
    sample of this size would move it) and `nll_mc_se`, the estimator's own noise (the per-sentence
    importance-sampling errors, and the spread of log Z over AIS runs, which shifts every
    sentence's NLL by the same amount).
    `state_path`: where progress is kept across interruptions (deleted once the estimate is done);
    it is only resumed from when it was made for the same sentences, settings and model.
    """
    model.eval()
    z_part = partition(model, cfg.ais, cfg.plain_mc_draws, cfg.seed)
    log_z = z_part["log_z"]
    gen = torch.Generator(device=model.device).manual_seed(cfg.seed + 1)
    # A batch's C descents (and its M AIS chains) run as one decoder call (forward and backward
    # to z), so the rows per call stay within the token cap.
    with_q = uses_q(model, ids, cfg)
    per_batch = max(1, model.decoder.token_cap(cfg.max_logits) // rows_per_sentence(cfg, with_q))
    batches = list(by_length(ids, cfg.batch_size, per_batch))
    key = _progress_key(ids, cfg, log_z)
    done, parts = _resume(state_path, key, gen)
    for b in range(done, len(batches)):
        batch = [ids[j] for j in batches[b]]
        parts.append(sentence_log_marginals(model, batch, cfg, log_z, gen))
        if state_path is not None:
            atomic_write(state_path, torch_bytes({"key": key, "batches": b + 1, "gen": gen.get_state(),
                                                  **_joined(parts)}))
        if progress:
            progress(len(batch))
    # Batches run in length order; the per-sentence results go back to the order of `ids`.
    order = torch.as_tensor([j for ix in batches for j in ix])
    res = {k: torch.empty_like(v).index_copy_(0, order, v) for k, v in _joined(parts).items()}
    nll, se, ess_s, floor, elbo = -res["log_p"], res["se"], res["ess"], res["floor"], res["elbo"]
    n, total, tokens = len(ids), nll.sum().item(), sum(len(s) + 1 for s in ids)
    if state_path is not None:
        Path(state_path).unlink(missing_ok=True)
    z_sd = z_part.get("std", 0.0)
    checked = torch.isfinite(floor)
    margin = (nll - floor)[checked]
    settings = {k: v for k, v in asdict(cfg).items() if k not in ("ais",)}
    return {"nll": total / n, "ppl": math.exp(total / tokens), "tokens": tokens, "sentences": n,
            "nll_se": (nll.std() / math.sqrt(n)).item() if n > 1 else math.inf,
            "nll_mc_se": math.sqrt(se.pow(2).sum().item() / n ** 2
                                   + (z_sd if math.isfinite(z_sd) else 0.0) ** 2),
            "log_z": log_z, "log_z_estimate": z_part,
            # Sentences whose estimate rests on about one chain: unbiased but heavy-tailed, the
            # few that land below their floor come from these (docs/likelihood.md).
            "ess": {"mean": ess_s.mean().item(), "median": ess_s.median().item(),
                    "min": ess_s.min().item(), "of": cfg.q_samples if with_q else cfg.samples,
                    "below_1_5": int((ess_s < 1.5).sum())},
            "floor": {"checked": int(checked.sum()), "violations": int((margin < 0).sum()),
                      "min_margin": margin.min().item() if len(margin) else math.nan,
                      "mean_floor": floor[checked].mean().item() if len(margin) else math.nan,
                      "mean_nll": nll[checked].mean().item() if len(margin) else math.nan},
            # The negative ELBO at the same draws (q proposal only): the bound q alone reaches.
            **({"neg_elbo": -elbo.mean().item(), "neg_elbo_se": (elbo.std() / math.sqrt(n)).item()
                if n > 1 else math.inf} if with_q else {}),
            # In the order of `ids`.
            "per_sentence": {"nll": nll.tolist(), "floor": floor.tolist(), "ess": ess_s.tolist(),
                             **({"neg_elbo": (-elbo).tolist()} if with_q else {})},
            "estimator": Q_ESTIMATOR if with_q else ESTIMATOR, "settings": settings}


def paired_difference(a, b) -> tuple[float, float]:
    """Mean of a - b over the same sentences (sequences of NLLs, nats) and its standard error
    sd(a - b) / sqrt(n) (inf for one sentence): far smaller than either mean's own when the two
    track each other, as two models' NLLs of the same sentences do."""
    d = torch.as_tensor(a, dtype=torch.float64) - torch.as_tensor(b, dtype=torch.float64)
    se = float(d.std() / math.sqrt(len(d))) if len(d) > 1 else math.inf
    return float(d.mean()), se


def _joined(parts: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    keys = ("log_p", "se", "ess", "floor", "elbo")
    if not parts:
        return {k: torch.empty(0, dtype=torch.float64) for k in keys}
    return {k: torch.cat([p[k] for p in parts]) for k in keys}


def _progress_key(ids: list[list[int]], cfg: NLLConfig, log_z: float) -> str:
    """Fingerprint of what an NLL estimate depends on: the sentences, the settings, and (through
    log Z, computed afresh from the model) the prior."""
    h = hashlib.sha1(repr(asdict(cfg)).encode())
    for s in ids:
        h.update((",".join(map(str, s)) + ";").encode())
    return f"{h.hexdigest()} {log_z!r}"


def _resume(state_path: Path | None, key: str, gen: torch.Generator
            ) -> tuple[int, list[dict[str, torch.Tensor]]]:
    """(batches done, their per-sentence results) from a progress file made for `key`, with
    `gen` set to where it stood; nothing done when there is no such file."""
    if state_path is None or not Path(state_path).exists():
        return 0, []
    saved = load_tensors(Path(state_path), "cpu", "NLL progress file")
    if saved.get("key") != key:
        return 0, []
    gen.set_state(saved["gen"])
    return int(saved["batches"]), [{k: saved[k] for k in ("log_p", "se", "ess", "floor", "elbo")}]
