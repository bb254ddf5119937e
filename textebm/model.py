"""LatentEBM: p(x, z) = p(z) p_beta(x|z), a prior, a decoder and a posterior tied together.

Energies (lower = more probable), the prior's U0 defined in textebm.prior:
    prior      U0(z)   = -log p(z) up to log Z and (D/2) log 2 pi  (E(z) + ||z||^2 / 2 for the EBM)
    posterior  U1(z|x) = U0(z) - log p_beta(x|z)
The prior is whatever `prior.kind` names (textebm.prior: the EBM, the fixed N(0, I), or one a
user registers); how z is inferred for x is whatever `langevin.init1` names (textebm.posterior).
This file holds neither decision: it builds both from their registries and delegates.
"""
from __future__ import annotations

import math
import re
from contextlib import contextmanager

import torch
from torch import nn

from common.precision import DTYPES, resolve
from textebm.config import DecoderConfig, EncoderConfig, LangevinConfig, PriorConfig, RunConfig
from textebm.decoder import LSTMDecoder
from textebm.posterior import build_posterior
from textebm.prior import build_prior


@contextmanager
def frozen(module: nn.Module):
    """Parameters stop requiring gradients for the duration: a Langevin chain needs dU/dz only,
    and the fused softmax (common.softmax) would otherwise also form its weight gradient."""
    flags = [p.requires_grad for p in module.parameters()]
    module.requires_grad_(False)
    try:
        yield module
    finally:
        for p, flag in zip(module.parameters(), flags):
            p.requires_grad_(flag)


def build_model(cfg: RunConfig, device: torch.device | str = "cpu", precision: str = "fp32",
                compile: bool = False) -> "LatentEBM":
    """The one place a model is made: the model a run's config describes, on `device`, its
    decoder computing in `precision` (fp32, bf16, or auto: resolved once per process,
    common.precision.resolve) and its prior chain compiled if `compile`. The last two are runtime
    choices, not weights: they are not in the state_dict."""
    model = LatentEBM(cfg.prior, cfg.decoder, cfg.langevin, cfg.encoder).to(device)
    model.decoder.compute_dtype = DTYPES[resolve(precision, device)[0]]
    model.prior.compile = compile
    return model



# Names of the state_dict before the prior and the posterior were modules of their own: the
# amortized start g(x) sat at `encoder.`, the fitted base's moments at the top level.
_LEGACY_KEYS = [(re.compile(r"^encoder\."), "posterior.encoder."),
                (re.compile(r"^(base_mean|base_second|base_chol)$"), r"prior.\1")]


def upgrade_state_dict(state: dict) -> dict:
    """A state_dict (or weight average) saved by an older textebm, under today's names."""
    out = {}
    for k, v in state.items():
        for pattern, new in _LEGACY_KEYS:
            k = pattern.sub(new, k)
        out[k] = v
    return out


class LatentEBM(nn.Module):
    def __init__(self, prior: PriorConfig, decoder: DecoderConfig, langevin_cfg: LangevinConfig,
                 encoder: EncoderConfig | None = None):
        super().__init__()
        self.prior_cfg, self.langevin_cfg = prior, langevin_cfg
        # Built in this order (prior, decoder, posterior): their initial weights are drawn from
        # the global stream in it, so a seed gives the same model as it always did.
        self.prior = build_prior(prior, langevin_cfg)
        self.decoder = LSTMDecoder(decoder)
        self.posterior = build_posterior(langevin_cfg, encoder or EncoderConfig(),
                                         decoder.vocab_size, prior.latent_dim)
        self.latent_dim = prior.latent_dim
        self.register_load_state_dict_pre_hook(_upgrade_on_load)

    @property
    def device(self) -> torch.device:
        return next(self.decoder.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.decoder.parameters()).dtype

    # ---- the prior (textebm.prior) --------------------------------------------------------
    def energy(self, z: torch.Tensor) -> torch.Tensor:
        """E(z), the prior's tilt of N(0, I) (-f_alpha(z) for the EBM, 0 for N(0, I)). (B, D) -> (B,)"""
        return self.prior.energy(z)

    def prior_energy(self, z: torch.Tensor) -> torch.Tensor:
        """U0(z) = -log p(z) up to log Z and (D/2) log 2 pi. (B, D) -> (B,)"""
        return self.prior.prior_energy(z)

    def to_z(self, u: torch.Tensor) -> torch.Tensor:
        """The prior's whitened coordinates to z (the identity but for a fitted base). (B, D)"""
        return self.prior.to_z(u)

    def to_u(self, z: torch.Tensor) -> torch.Tensor:
        """z to the prior's whitened coordinates. (B, D)"""
        return self.prior.to_u(z)

    def tilt(self, u: torch.Tensor) -> torch.Tensor:
        """The prior's tilt of N(0, I) in whitened coordinates, whose log E_N(0,I)[exp(-tilt)]
        is log Z (textebm.ais). (B, D) -> (B,)"""
        return self.prior.tilt(u)

    def sample_prior(self, n: int, steps: int | None = None, step_size: float | None = None,
                     generator: torch.Generator | None = None, noise: float | None = None,
                     sampler: str | None = None, z0: torch.Tensor | None = None,
                     **trace) -> tuple[torch.Tensor, dict]:
        """z ~ the prior: for the EBM a short-run chain, K0 steps from N(0, I) (or from z0:
        (n, D), the persistent chains of training). -> z: (n, D), info.

        `noise` is the chain's noise scale (default: the training chain's noise0; samples for
        people use `langevin_cfg.sampling_noise()`). `trace` passes `trace=True` (U0 along the
        chain), `record`, `trace_at=(k, ...)` to `langevin`. An exact prior (N(0, I)) is drawn
        exactly unless something along the chain is asked for: noise c is then z_0 * c, the
        stationary law N(0, c^2 I) of the chain at that noise. `sampler` (default the run's
        prior_sampler) "mala": the chain Metropolis-adjusted (langevin.mala_chain, noise 1, its
        step size tuned over the first half), which samples p_alpha itself rather than the
        short-run chain's own law; `noise` does not apply to it."""
        return self.prior.sample(n, self.device, self.dtype, generator, steps, step_size, noise,
                                 sampler, z0, **trace)

    # ---- the posterior (textebm.posterior) ------------------------------------------------
    def posterior_energy(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """U1(z|x) = U0(z) - log p_beta(x|z). z: (B, D), x: (B, T) -> (B,)."""
        return self.prior_energy(z) - self.decoder.log_prob(x, z)

    def log_joint(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """log p(z) + log p_beta(x|z) without log Z (unnormalised; exact for an exact prior).
        x: (B, T), z: (B, D) -> (B,)."""
        log_p0_const = -0.5 * self.latent_dim * math.log(2 * math.pi)
        return -self.posterior_energy(z, x) + log_p0_const

    def chain_start(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Where a posterior chain for x starts when no warm start is given (the amortized
        guess g(x), or N(0, I): the posterior's choice). x: (B, T) -> (B, D)."""
        return self.posterior.start(x, generator)

    def infer(self, x: torch.Tensor, steps: int | None = None,
              step_size: float | list[float] | None = None,
              generator: torch.Generator | None = None, z0: torch.Tensor | None = None,
              read: bool = False, **trace) -> tuple[torch.Tensor, dict]:
        """z ~ p(z|x) by the run's posterior (Posterior.infer: the short-run chain with the
        run's settings, from z0 or `chain_start`). x: (B, T) -> z: (B, D). `read`: the chain
        that reads a trained model (read_schedule, read_noise1) instead of the training one."""
        return self.posterior.infer(self, x, steps, step_size, generator, z0, read, **trace)


def _upgrade_on_load(module, state_dict, prefix, *args) -> None:
    """load_state_dict pre-hook: rename an older checkpoint's keys in place."""
    if prefix:
        return
    new = upgrade_state_dict(state_dict)
    if list(new) != list(state_dict):
        state_dict.clear()
        state_dict.update(new)
