"""LatentEBM: p(x, z) = p_alpha(z) p_beta(x|z), the prior and the decoder tied together.

Energies (lower = more probable), with E(z) = -f_alpha(z) and p0 = N(0, I):
    prior      U0(z)   = E(z) + ||z||^2 / 2
    posterior  U1(z|x) = E(z) + ||z||^2 / 2 - log p_beta(x|z)
With `kind="gaussian"` E is 0: the fixed N(0, I) prior baseline (paper Table 8).

With `base="fitted"` the EBM tilts p0 = N(mu, L L^T) instead, mu and L following a moving average
of the posterior codes' moments. In whitened coordinates u = L^-1 (z - mu) the model is the
paper's form again, a tilt of N(0, I) by f(mu + L u), so the prior chain, AIS and plain Monte
Carlo all run on u (`tilt`) and map back: the tilt is left with what the codes' mean and
covariance do not explain, so it needs no wells as steep as a tilt of N(0, I) does
(docs/coherence.md). Then U0(z) = E(z) + ||L^-1 (z - mu)||^2 / 2 + log det L.
"""
from __future__ import annotations

import math
from contextlib import contextmanager

import torch
from torch import nn

from common.precision import DTYPES, resolve
from textebm.config import DecoderConfig, EncoderConfig, LangevinConfig, PriorConfig, RunConfig
from textebm.decoder import LSTMDecoder
from textebm.encoder import AmortizedInit
from textebm.langevin import CompiledChain, init_z, langevin, mala_chain
from textebm.prior import EnergyPrior


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
    model.compile_prior = compile
    return model


class LatentEBM(nn.Module):
    def __init__(self, prior: PriorConfig, decoder: DecoderConfig, langevin_cfg: LangevinConfig,
                 encoder: EncoderConfig | None = None):
        super().__init__()
        if prior.kind not in ("ebm", "gaussian"):
            raise ValueError(f"prior kind must be 'ebm' or 'gaussian', got {prior.kind!r}")
        self.prior_cfg, self.langevin_cfg = prior, langevin_cfg
        self.prior = EnergyPrior(prior) if prior.kind == "ebm" else None
        self.fitted_base = prior.kind == "ebm" and prior.base == "fitted"
        if self.fitted_base:
            # Buffers, not parameters: moved by `update_base`, saved in the state_dict.
            d = prior.latent_dim
            self.register_buffer("base_mean", torch.zeros(d))
            self.register_buffer("base_second", torch.eye(d))   # moving E[z z^T]
            self.register_buffer("base_chol", torch.eye(d))     # L, Sigma = L L^T
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
        """U0(z) = E(z) + ||z||^2/2 = -log p_alpha(z) up to log Z(alpha) + const. (B,)
        (fitted base: E(z) + ||L^-1 (z - mu)||^2 / 2 + log det L)."""
        if not self.fitted_base:
            return self.energy(z) + 0.5 * z.pow(2).sum(-1)
        logdet = self.base_chol.diagonal().log().sum()
        return self.energy(z) + 0.5 * self.to_u(z).pow(2).sum(-1) + logdet

    def to_z(self, u: torch.Tensor) -> torch.Tensor:
        """Whitened coordinates to z: mu + L u (the identity for the standard base). (B, D)"""
        return u if not self.fitted_base else self.base_mean + u @ self.base_chol.T

    def to_u(self, z: torch.Tensor) -> torch.Tensor:
        """z to whitened coordinates: L^-1 (z - mu). (B, D)"""
        if not self.fitted_base:
            return z
        return torch.linalg.solve_triangular(self.base_chol, (z - self.base_mean).T, upper=False).T

    def tilt(self, u: torch.Tensor) -> torch.Tensor:
        """E(mu + L u): the energy of the tilt of N(0, I) in whitened coordinates, whose log
        E_N(0,I)[exp(-tilt)] is log Z(alpha) (textebm.ais). (B, D) -> (B,)"""
        return self.energy(self.to_z(u))

    def _prior_u_energy(self, u: torch.Tensor) -> torch.Tensor:
        return self.tilt(u) + 0.5 * u.pow(2).sum(-1)

    @torch.no_grad()
    def update_base(self, z_pos: torch.Tensor, decay: float) -> None:
        """Move the fitted base's mean and covariance towards the codes z_pos: (B, D)."""
        z = z_pos.detach().to(self.base_mean.dtype)
        self.base_mean.mul_(decay).add_(z.mean(0), alpha=1 - decay)
        self.base_second.mul_(decay).add_(z.T @ z / z.size(0), alpha=1 - decay)
        cov = self.base_second - torch.outer(self.base_mean, self.base_mean)
        chol, info = torch.linalg.cholesky_ex(cov + 1e-4 * torch.eye(cov.size(0), device=cov.device))
        if int(info) == 0:  # else keep the last factor (a covariance not yet positive definite)
            self.base_chol.copy_(chol)

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
                     sampler: str | None = None, z0: torch.Tensor | None = None,
                     **trace) -> tuple[torch.Tensor, dict]:
        """z ~ short-run prior chain: K0 steps from N(0, I) (or from z0: (n, D), the persistent
        chains of training). -> z: (n, D), info.

        `noise` is the chain's noise scale (default: the training chain's noise0; samples for
        people use `langevin_cfg.sampling_noise()`). `trace` passes `trace=True` (U0 along the
        chain), `record`, `trace_at=(k, ...)` to `langevin`. A fixed N(0, I) prior is sampled
        exactly, with no chain unless something along the chain is asked for: noise c is then
        z_0 * c, the stationary law N(0, c^2 I) of the chain at that noise.
        `sampler` (default the run's prior_sampler) "mala": the chain Metropolis-adjusted
        (langevin.mala_chain, noise 1, its step size tuned over the first half), which samples
        p_alpha itself rather than the short-run chain's own law; `noise` does not apply to it.
        """
        # The chain runs on the whitened coordinates u = L^-1 (z - mu), from N(0, I) there, and
        # maps back; for the standard base u is z and the chain is the paper's, op for op.
        if trace.get("record") is not None:
            record = trace["record"]
            trace = {**trace, "record": lambda u: record(self.to_z(u))}
        u, info = self._chain(n, steps, step_size, generator, noise, sampler,
                              None if z0 is None else self.to_u(z0), **trace)
        info["z_at"] = {k: self.to_z(v) for k, v in info.get("z_at", {}).items()}
        return self.to_z(u), info

    def _chain(self, n, steps, step_size, generator, noise, sampler, u0, **trace):
        """sample_prior's chain on u: U(u) = E(mu + L u) + ||u||^2/2 (`_prior_u_energy`)."""
        energy = self._prior_u_energy
        cfg = self.langevin_cfg
        steps = cfg.k0 if steps is None else steps
        step_size = cfg.s0 if step_size is None else step_size
        noise = cfg.noise0 if noise is None else noise
        z0 = init_z(n, self.latent_dim, self.device, generator, self.dtype) if u0 is None else u0
        traced = trace.get("trace") or trace.get("trace_at")
        sampler = cfg.prior_sampler if sampler is None else sampler
        if sampler == "mala":
            if trace.get("trace"):
                raise ValueError("the MALA sampler records no energy profile; use the chain")
            return mala_chain(energy, z0, steps, step_size, generator,
                              trace_at=tuple(trace.get("trace_at", ())))
        if sampler != "chain":
            raise ValueError(f"sampler must be 'chain' or 'mala', got {sampler!r}")
        if self.prior is None and not traced:
            return langevin(energy, z0 * noise, 0, step_size, generator, **trace)
        if self.compile_prior and not traced:
            if self._compiled_prior is None:
                self._compiled_prior = CompiledChain(energy)
            return self._compiled_prior(z0, steps, step_size, generator, noise)
        return langevin(energy, z0, steps, step_size, generator, noise=noise, **trace)

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
