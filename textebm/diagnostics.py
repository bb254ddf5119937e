"""Latent diagnostics: does z carry the sentence, and do prior samples stay on the data?

For any corpus (`latent_use`):
  - gap: NLL/token of x at z ~ N(0, I) minus NLL/token at z from the posterior chain (0 means the
    decoder ignores z: posterior collapse);
  - active units: dimensions whose posterior mean varies over the data with variance > 0.01;
  - I(x; z): the aggregate-posterior estimate of mutual information (Hoffman & Johnson 2016;
    He et al. 2019), with q(z|x) a diagonal Gaussian fitted to several posterior chains per
    sentence, q(z) their mixture over the N sentences: in [0, log N] (`mutual_information`).
The prior's coherence with its codes (`prior_coherence`, PROTOCOL.md §2c); the demo grammar's own
checks (topic probe, impossible samples) are in pipeline/demo_checks.py.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from corpora.batching import by_length, frame, scored_tokens
from textebm.ais import AISConfig
from textebm.langevin import descend, init_z
from textebm.model import LatentEBM, frozen
from textebm.nll import partition

GAP_STEPS = 200  # posterior steps for the gap (the chain's own schedule, its last step repeated)


def _batches(model: LatentEBM, sents: list[list[int]], batch_size: int, chains: int = 1):
    """Length-sorted batches whose `chains` copies fit one decoder call (decoder.token_cap)."""
    for ix in by_length(sents, batch_size, max(1, model.decoder.token_cap() // chains)):
        yield ix, frame([sents[j] for j in ix]).to(model.device)


def recon_nll(model: LatentEBM, sents: list[list[int]], seed: int, infer: bool = True,
              steps: int | None = None, batch_size: int = 128) -> float:
    """Nats per scored token of -log p(x|z), z from the posterior chain (`steps`, default the
    run's K1; fixed seed) or, with `infer=False`, from N(0, I)."""
    model.eval()
    gen = torch.Generator(device=model.device).manual_seed(seed)
    total, tokens = 0.0, 0
    for _, x in _batches(model, sents, batch_size):
        if infer:
            z, _ = model.infer(x, steps=steps, generator=gen)
        else:
            z = init_z(x.size(0), model.latent_dim, model.device, gen, model.dtype)
        with torch.no_grad():
            total -= model.decoder.log_prob(x, z).sum().item()
        tokens += int(scored_tokens(x).sum())
    return total / tokens


def posterior_chains(model: LatentEBM, sents: list[list[int]], chains: int, seed: int,
                     steps: int | None = None, batch_size: int = 64, read: bool = False) -> torch.Tensor:
    """End points of `chains` independent posterior chains per sentence: (N, C, D), input order.
    `read`: the run's reading chain (LatentEBM.infer) instead of its training chain."""
    model.eval()
    gen = torch.Generator(device=model.device).manual_seed(seed)
    out = torch.empty(len(sents), chains, model.latent_dim, device=model.device)
    for ix, x in _batches(model, sents, max(1, batch_size // chains), chains):
        z, _ = model.infer(x.repeat_interleave(chains, 0), steps=steps, generator=gen, read=read)
        out[torch.as_tensor(ix, device=model.device)] = z.view(len(ix), chains, -1)
    return out


def mutual_information(z: torch.Tensor, draws: int = 10, seed: int = 0) -> float:
    """I(x; z) of the aggregate posterior, from chain end points z: (N, C, D), C >= 2; in
    [0, log N] by construction.

    q(z|x_i) = N(mu_i, diag(s^2)): s^2 the within-sentence variance of the chains pooled over
    sentences, and mu_i the sentence's chain mean shrunk towards the grand mean, per dimension, by
    sqrt(max(B - s^2/C, 0) / B), B the variance of the chain means over sentences. The means of C
    chains scatter by s^2/C even where every sentence has the same posterior; the shrinkage
    leaves the spread that the posterior means themselves have (as `active_units` corrects for),
    so a collapsed model's q_i coincide and read 0, not the ~3 nats a plain fit gives them at
    D = 32, C = 4. With q(z) = (1/N) sum_i q_i(z) and r(i|z) = q_i(z) / (N q(z)),

        I = E_{z ~ q(z)} [ log N - H(r(.|z)) ],

    the text-VAE aggregate-posterior estimator (Hoffman & Johnson 2016) written as an average of
    terms each in [0, log N]; `draws` z per sentence, seeded."""
    n, c, d = z.shape
    z = z.double()
    means = z.mean(1)                                                      # (N, D)
    within = z.var(1).mean(0)                                              # (D,)
    grand, between = means.mean(0), means.var(0)
    shrink = ((between - within / c).clamp_min(0) / between.clamp_min(1e-300)).sqrt()
    mu = grand + (means - grand) * shrink
    std = within.sqrt().clamp_min(1e-6)
    gen = torch.Generator().manual_seed(seed)
    total = 0.0
    for _ in range(draws):
        pts = mu + std * torch.randn(n, d, generator=gen, dtype=torch.float64)
        for a in range(0, n, 256):
            logq = (-0.5 * ((pts[a:a + 256, None] - mu) / std).pow(2)).sum(-1)    # (b, N)
            r = torch.log_softmax(logq, 1)
            total += float((math.log(n) + (r.exp() * r).sum(1)).sum())
    return min(max(total / (n * draws), 0.0), math.log(n))   # the bounds up to float rounding


def active_units(z: torch.Tensor, threshold: float = 0.01) -> int:
    """Dimensions whose posterior mean varies over the data with variance > threshold.
    z: (N, C, D) chain end points. The variance of the C-chain means over sentences is corrected
    for the chains' own scatter (between minus within/C, as in a one-way ANOVA), so chains that
    merely scatter around a shared posterior do not count as active; a unit must also clear
    standard errors (four) of that estimate under no variation (sqrt(2 / (N - 1)) * within / C)."""
    n, c = z.size(0), z.size(1)
    between = z.mean(1).var(0)
    within = z.var(1).mean(0) / c if c > 1 else torch.zeros_like(between)
    noise_floor = 4 * math.sqrt(2 / max(n - 1, 1)) * within
    return int(((between - within) > torch.clamp(noise_floor, min=threshold)).sum())


def latent_use(model: LatentEBM, sents: list[list[int]], seed: int = 0, chains: int = 6,
               gap_steps: int | None = GAP_STEPS, chain_sentences: int | None = None) -> dict:
    """The corpus-independent diagnostics on `sents` (id lists; a few hundred are enough).
    `gap_steps=None`: the gap at the run's own K1; `chain_sentences`: AU and I(x; z) on only the
    first that many sentences (cheaper, as during training)."""
    post = recon_nll(model, sents, seed, steps=gap_steps)
    rand = recon_nll(model, sents, seed, infer=False)
    sub = sents[:chain_sentences] if chain_sentences else sents
    z = posterior_chains(model, sub, chains, seed + 1)
    return {"gap_nats_tok": rand - post, "nll_tok_posterior_z": post, "nll_tok_random_z": rand,
            "gap_steps": gap_steps, "active_units": active_units(z),
            "mutual_info": mutual_information(z, seed=seed), "mutual_info_max": math.log(len(sub)),
            "sentences": len(sents), "z_norm_posterior": float(z.norm(dim=-1).mean())}


@dataclass
class CoherenceConfig:
    """The budget of `prior_coherence`: evaluation's default, and a light one for validation."""
    samples: int = 2000        # prior-chain samples (the run's K0 and sampling noise)
    starts: int = 1000         # N(0, I) starts of the descent on U0
    descent_steps: int = 200
    descent_lr: float = 0.05
    # 10,000 temperatures: enough to show how far plain Monte Carlo is off, at a quarter of the
    # NLL's budget (its log Z must be right to a fraction of a nat; this one to a few).
    ais: AISConfig = field(default_factory=lambda: AISConfig(temperatures=10000))
    plain_mc_draws: int = 200_000


LIGHT_COHERENCE = CoherenceConfig(samples=300, starts=100, descent_steps=100,
                                  ais=AISConfig(temperatures=500, chains=100, runs=2, pilot_chains=50),
                                  plain_mc_draws=20_000)


def prior_coherence(model: LatentEBM, sents: list[list[int]], seed: int = 0,
                    cfg: CoherenceConfig = CoherenceConfig(), sampler: str | None = None,
                    log_z: dict | None = None) -> dict:
    """Is the prior one distribution with the codes it was fitted to (PROTOCOL.md §2c)?

    - E at the posterior codes of `sents` (the run's reading chain): mean and 1st percentile;
    - E at prior samples (the run's prior chain and sampling noise, or `sampler`), and their
      difference from
      the codes' mean (`energy_samples_minus_codes`; 0 when the samples land where the codes are);
    - the deepest E that Adam descent on U0 = E + ||z||^2/2 finds from `starts` N(0, I) starts,
      and how far below the codes' 1st percentile it lies (`descent_below_codes_p01`: a well that
      no code fills, which the contrastive update never lifts);
    - log Z by AIS against plain Monte Carlo (`log_z_ais_minus_plain`: about 0 when N(0, I)
      covers the prior's mass). `log_z`: a `nll.partition` result (with `plain_mc`) to reuse
      instead of estimating both again (evaluate passes the NLL's).
    Empty for an exact prior (normalised, drawn exactly: the fixed N(0, I))."""
    if model.prior.exact:
        return {}
    model.eval()
    gen = torch.Generator(device=model.device).manual_seed(seed)
    codes = posterior_chains(model, sents, 1, seed, read=True).squeeze(1)
    lc = model.langevin_cfg
    z, _ = model.sample_prior(cfg.samples, lc.sampling_steps(), generator=gen, noise=lc.sampling_noise(),
                              sampler=sampler)
    starts = torch.randn(cfg.starts, model.latent_dim, generator=gen, device=model.device, dtype=model.dtype)
    with frozen(model):
        ends, _ = descend(model.prior_energy, model.to_z(starts), cfg.descent_steps, cfg.descent_lr)
        with torch.no_grad():
            e_codes, e_samples, e_ends = (model.energy(v).double() for v in (codes, z, ends))
    if log_z is None or "plain_mc" not in log_z:
        log_z = partition(model, cfg.ais, cfg.plain_mc_draws, seed)
    ais, plain = log_z, log_z["plain_mc"]
    p01 = float(torch.quantile(e_codes, 0.01))
    return {"energy_codes_mean": float(e_codes.mean()), "energy_codes_p01": p01,
            "energy_samples_mean": float(e_samples.mean()),
            "energy_samples_minus_codes": float(e_samples.mean() - e_codes.mean()),
            "descent_energy_min": float(e_ends.min()), "descent_below_codes_p01": p01 - float(e_ends.min()),
            "log_z_ais": ais["log_z"], "log_z_ais_spread": ais["spread"],
            "log_z_plain_mc": plain["log_z"], "log_z_plain_mc_ess": plain["ess"],
            "log_z_ais_minus_plain": ais["log_z"] - plain["log_z"],
            "coherence_budget": {"samples": cfg.samples, "starts": cfg.starts,
                                 "descent_steps": cfg.descent_steps,
                                 "ais_temperatures": ais["temperatures"],
                                 "ais_chains": ais["chains"], "ais_runs": ais["runs"],
                                 "plain_mc_draws": plain["draws"], "codes": len(sents)}}
