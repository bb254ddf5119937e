"""LatentEBM: p(x, z) = p_alpha(z) p_beta(x|z), the prior and the decoder tied together.

Energies (lower = more probable), with E(z) = -f_alpha(z) and p0 = N(0, I):
    prior      U0(z)   = E(z) + ||z||^2 / 2
    posterior  U1(z|x) = E(z) + ||z||^2 / 2 - log p_beta(x|z)
With `kind="gaussian"` E is 0: the fixed N(0, I) prior baseline (paper Table 8).
"""
from __future__ import annotations

import math
from contextlib import contextmanager

import torch
from torch import nn

from textebm.config import DecoderConfig, EncoderConfig, LangevinConfig, PriorConfig
from textebm.decoder import LSTMDecoder
from textebm.encoder import AmortizedInit
from textebm.langevin import CompiledChain, init_z, langevin, mala_chain
from textebm.prior import EnergyPrior


@contextmanager
def frozen(module: nn.Module):
    """Parameters stop requiring gradients for the duration: a Langevin chain needs dU/dz only,
    and the fused softmax (textebm.softmax) would otherwise also form its weight gradient."""
    flags = [p.requires_grad for p in module.parameters()]
    module.requires_grad_(False)
    try:
        yield module
    finally:
        for p, flag in zip(module.parameters(), flags):
            p.requires_grad_(flag)


class LatentEBM(nn.Module):
    def __init__(self, prior: PriorConfig, decoder: DecoderConfig, langevin_cfg: LangevinConfig,
                 encoder: EncoderConfig | None = None):
        super().__init__()
        if prior.kind not in ("ebm", "gaussian"):
            raise ValueError(f"prior kind must be 'ebm' or 'gaussian', got {prior.kind!r}")
        self.prior_cfg, self.langevin_cfg = prior, langevin_cfg
        self.prior = EnergyPrior(prior) if prior.kind == "ebm" else None
        self.decoder = LSTMDecoder(decoder)
        self.latent_dim = prior.latent_dim
        # The amortized initializer exists only where the posterior chain starts from it.
        self.encoder = (AmortizedInit(encoder or EncoderConfig(), decoder.vocab_size, prior.latent_dim)
                        if langevin_cfg.init1 == "encoder" else None)
        # Run the prior chain compiled (textebm.langevin.CompiledChain): a runtime choice like
        # the decoder's compute_dtype, not part of the model, so not in the state_dict.
        self.compile_prior = False
        self._compiled_prior: CompiledChain | None = None

    @property
    def device(self) -> torch.device:
        return next(self.decoder.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.decoder.parameters()).dtype

    def energy(self, z: torch.Tensor) -> torch.Tensor:
        """E(z) = -f_alpha(z): (B, D) -> (B,); zero for the Gaussian prior."""
        if self.prior is None:
            return z.new_zeros(z.size(0))
        return self.prior(z)

    def prior_energy(self, z: torch.Tensor) -> torch.Tensor:
        """U0(z) = E(z) + ||z||^2/2 = -log p_alpha(z) up to log Z(alpha) + const. (B,)"""
        return self.energy(z) + 0.5 * z.pow(2).sum(-1)

    def posterior_energy(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """U1(z|x) = U0(z) - log p_beta(x|z). z: (B, D), x: (B, T) -> (B,)."""
        return self.prior_energy(z) - self.decoder.log_prob(x, z)

    def log_joint(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """log p_alpha(z) + log p_beta(x|z) without log Z(alpha) (unnormalised; exact for the
        Gaussian prior). x: (B, T), z: (B, D) -> (B,)."""
        log_p0_const = -0.5 * self.latent_dim * math.log(2 * math.pi)
        return -self.posterior_energy(z, x) + log_p0_const

    def sample_prior(self, n: int, steps: int | None = None, step_size: float | None = None,
                     generator: torch.Generator | None = None, noise: float | None = None,
                     sampler: str | None = None, **trace) -> tuple[torch.Tensor, dict]:
        """z ~ short-run prior chain: K0 steps from N(0, I). -> z: (n, D), info.

        `noise` is the chain's noise scale (default: the training chain's noise0; samples for
        people use `langevin_cfg.sampling_noise()`). `trace` passes `trace=True` (U0 along the
        chain), `record`, `trace_at=(k, ...)` to `langevin`. A fixed N(0, I) prior is sampled
        exactly, with no chain unless something along the chain is asked for: noise c is then
        z_0 * c, the stationary law N(0, c^2 I) of the chain at that noise.
        `sampler` (default the run's prior_sampler) "mala": the chain Metropolis-adjusted
        (langevin.mala_chain, noise 1, its step size tuned over the first half), which samples
        p_alpha itself rather than the short-run chain's own law; `noise` does not apply to it.
        """
        cfg = self.langevin_cfg
        steps = cfg.k0 if steps is None else steps
        step_size = cfg.s0 if step_size is None else step_size
        noise = cfg.noise0 if noise is None else noise
        z0 = init_z(n, self.latent_dim, self.device, generator, self.dtype)
        traced = trace.get("trace") or trace.get("trace_at")
        sampler = cfg.prior_sampler if sampler is None else sampler
        if sampler == "mala":
            if trace.get("trace"):
                raise ValueError("the MALA sampler records no energy profile; use the chain")
            return mala_chain(self.prior_energy, z0, steps, step_size, generator,
                              trace_at=tuple(trace.get("trace_at", ())))
        if sampler != "chain":
            raise ValueError(f"sampler must be 'chain' or 'mala', got {sampler!r}")
        if self.prior is None and not traced:
            return langevin(self.prior_energy, z0 * noise, 0, step_size, generator, **trace)
        if self.compile_prior and not traced:
            if self._compiled_prior is None:
                self._compiled_prior = CompiledChain(self.prior_energy)
            return self._compiled_prior(z0, steps, step_size, generator, noise)
        return langevin(self.prior_energy, z0, steps, step_size, generator, noise=noise, **trace)

    def chain_start(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Where a posterior chain for x starts when no warm start is given: the amortized guess
        g(x) if the run has an encoder, else N(0, I). x: (B, T) -> (B, D)."""
        if self.encoder is not None:
            with torch.no_grad():
                return self.encoder(x)
        return init_z(x.size(0), self.latent_dim, self.device, generator, self.dtype)

    def infer(self, x: torch.Tensor, steps: int | None = None,
              step_size: float | list[float] | None = None,
              generator: torch.Generator | None = None, z0: torch.Tensor | None = None,
              read: bool = False, **trace) -> tuple[torch.Tensor, dict]:
        """z ~ short-run posterior chain p(z|x) with the run's settings (K1 steps, step size or
        schedule, noise scale) from z0 (default: `chain_start`). x: (B, T) -> z: (B, D).
        `read`: the chain that reads a trained model (read_schedule, read_noise1) instead of the
        training chain.

        The decoder runs without dropout inside the chain (the chain targets the model's
        posterior, not a randomly thinned one); the caller's train/eval mode is restored.
        """
        cfg = self.langevin_cfg
        steps = cfg.k1 if steps is None else steps
        step_size = cfg.posterior_steps(read) if step_size is None else step_size
        was_training = self.training
        self.eval()
        try:
            if z0 is None:
                z0 = self.chain_start(x, generator)
            with frozen(self):
                return langevin(lambda z: self.posterior_energy(z, x), z0, steps, step_size,
                                generator, noise=cfg.posterior_noise(read), **trace)
        finally:
            self.train(was_training)
