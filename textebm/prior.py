"""The prior p(z): one interface, `Prior`, and a registry that `prior.kind` picks from.

Sign convention, for every prior: U0(z) = -log p(z) - (D/2) log 2 pi, up to log Z, so that the
N(0, I) base gives U0 = ||z||^2 / 2 exactly; E(z) = U0(z) - ||z||^2 / 2 is the prior's tilt of
N(0, I) (lower = more probable). The two priors of the paper:

  - `ebm` (EnergyPrior): p_alpha(z) ∝ exp(f_alpha(z)) N(0, I), E = -f_alpha, f an MLP (paper
    Table 6); sampled by short-run Langevin (K0 steps from N(0, I)); learned contrastively
    (Algorithm 1, step 4); log Z(alpha) unknown (estimated by AIS, textebm.ais);
  - `gaussian` (GaussianPrior): the fixed N(0, I) of a text VAE (paper Table 8): E = 0, exact
    draws, log Z = 0, nothing to learn.

Every prior is sampled and scored in whitened coordinates u = L^-1 (z - mu) (`to_u`, `to_z`),
the identity except for the EBM's fitted base, so the chains, AIS and plain Monte Carlo run on a
tilt of N(0, I) (`tilt`) whatever the base. A new prior is a subclass registered under its kind:

    @register_prior("mixture")
    class Mixture(Prior):
        exact = True                  # exact draws, log Z = 0: no chain, no AIS
        def prior_energy(self, z): ...
        def sample(self, n, device, dtype, generator=None, **chain): ...
        def loss(self, z_pos, z_neg, train_cfg): ...   # if it has parameters

and nothing else in textebm branches on the kind (docs/architecture.md).
"""
from __future__ import annotations

import torch
from torch import nn

from textebm.config import LangevinConfig, PriorConfig, TrainConfig
from textebm.langevin import init_z, langevin, make_prior_chain, mala_chain

PRIORS: dict[str, type["Prior"]] = {}


def register_prior(kind: str):
    """Class decorator: make a Prior subclass the one `prior.kind = kind` builds."""
    def add(cls: type[Prior]) -> type[Prior]:
        PRIORS[kind] = cls
        cls.kind = kind
        return cls
    return add


def build_prior(cfg: PriorConfig, chain: LangevinConfig) -> "Prior":
    """The prior `cfg.kind` names, with the prior chain's settings `chain` (k0, s0, noise0, ...)."""
    if cfg.kind not in PRIORS:
        raise ValueError(f"prior kind must be one of {', '.join(PRIORS)}, got {cfg.kind!r}")
    return PRIORS[cfg.kind](cfg, chain)


class Prior(nn.Module):
    """p(z) on R^D. Subclasses give `prior_energy` (or `energy`) and, if they learn, `loss`.

    The defaults here are the general case: sampling by the run's prior chain (short-run
    Langevin or MALA on U0, from N(0, I)), log Z unknown. `exact = True` declares a prior that
    is normalised (log Z = 0) and draws exact samples (`sample` overridden), so that no chain,
    no persistent bank and no AIS is run for it."""
    kind = "?"
    exact = False

    def __init__(self, cfg: PriorConfig, chain: LangevinConfig):
        super().__init__()
        self.cfg, self.chain_cfg = cfg, chain
        self.latent_dim = cfg.latent_dim
        # Run the prior chain compiled (langevin.CompiledChain; on CUDA one captured graph,
        # langevin.GraphChain): a runtime choice, not a weight. `_compiled` is that runner,
        # built for the device and the setting it was asked for (`_runner_for`).
        self.compile = False
        self._compiled = None
        self._runner_for: tuple | None = None

    # ---- density ------------------------------------------------------------------------
    def prior_energy(self, z: torch.Tensor) -> torch.Tensor:
        """U0(z) = -log p(z) - (D/2) log 2 pi, up to log Z. z: (B, D) -> (B,)."""
        return self.energy(z) + 0.5 * z.pow(2).sum(-1)

    def energy(self, z: torch.Tensor) -> torch.Tensor:
        """E(z) = U0(z) - ||z||^2 / 2, the tilt of N(0, I). z: (B, D) -> (B,)."""
        return self.prior_energy(z) - 0.5 * z.pow(2).sum(-1)

    def to_z(self, u: torch.Tensor) -> torch.Tensor:
        """Whitened coordinates to z (the identity unless a base is fitted). (B, D)"""
        return u

    def to_u(self, z: torch.Tensor) -> torch.Tensor:
        """z to whitened coordinates (the identity unless a base is fitted). (B, D)"""
        return z

    def tilt(self, u: torch.Tensor) -> torch.Tensor:
        """The energy of the tilt of N(0, I) in whitened coordinates, whose
        log E_N(0,I)[exp(-tilt)] is log Z (textebm.ais). (B, D) -> (B,)"""
        return self.energy(self.to_z(u))

    # ---- sampling -----------------------------------------------------------------------
    def sample(self, n: int, device: torch.device, dtype: torch.dtype,
               generator: torch.Generator | None = None, steps: int | None = None,
               step_size: float | None = None, noise: float | None = None,
               sampler: str | None = None, z0: torch.Tensor | None = None,
               **trace) -> tuple[torch.Tensor, dict]:
        """z ~ the prior chain: K0 steps from N(0, I) (or from z0: (n, D), persistent chains).
        -> z: (n, D), info. `noise`: the chain's noise scale (default noise0); `sampler`
        (default prior_sampler) "mala" samples p itself; `trace` passes `trace`, `record`,
        `trace_at` to `langevin` (LatentEBM.sample_prior documents them)."""
        # The chain runs on u = L^-1 (z - mu), from N(0, I) there, and maps back; for the
        # standard base u is z and the chain is the paper's, op for op.
        if trace.get("record") is not None:
            record = trace["record"]
            trace = {**trace, "record": lambda u: record(self.to_z(u))}
        u0 = init_z(n, self.latent_dim, device, generator, dtype) if z0 is None else self.to_u(z0)
        u, info = self._chain(u0, steps, step_size, generator, noise, sampler, **trace)
        info["z_at"] = {k: self.to_z(v) for k, v in info.get("z_at", {}).items()}
        return self.to_z(u), info

    def _u_energy(self, u: torch.Tensor) -> torch.Tensor:
        return self.tilt(u) + 0.5 * u.pow(2).sum(-1)

    def _chain(self, u0, steps, step_size, generator, noise, sampler, **trace):
        cfg = self.chain_cfg
        steps = cfg.k0 if steps is None else steps
        step_size = cfg.s0 if step_size is None else step_size
        noise = cfg.noise0 if noise is None else noise
        sampler = cfg.prior_sampler if sampler is None else sampler
        if sampler == "mala":
            if trace.get("trace"):
                raise ValueError("the MALA sampler records no energy profile; use the chain")
            return mala_chain(self._u_energy, u0, steps, step_size, generator,
                              trace_at=tuple(trace.get("trace_at", ())))
        if sampler != "chain":
            raise ValueError(f"sampler must be 'chain' or 'mala', got {sampler!r}")
        if not (trace.get("trace") or trace.get("trace_at")):   # a traced chain stays eager
            if self._runner_for != (u0.device, self.compile):
                self._compiled = make_prior_chain(self._u_energy, u0.device, self.compile)
                self._runner_for = (u0.device, self.compile)
            if self._compiled is not None:
                return self._compiled(u0, steps, step_size, generator, noise)
        return langevin(self._u_energy, u0, steps, step_size, generator, noise=noise, **trace)

    # ---- learning -----------------------------------------------------------------------
    def loss(self, z_pos: torch.Tensor, z_neg: torch.Tensor, train: TrainConfig
             ) -> tuple[torch.Tensor, dict]:
        """The prior's training loss at the posterior codes z_pos: (B, D) and the prior chain's
        z_neg: (M, D), and tensors to log. Called only for a prior with parameters."""
        raise NotImplementedError(f"prior {self.kind!r} has parameters but no loss")

    def observe(self, z_pos: torch.Tensor) -> None:
        """The codes of an iteration, for priors that follow them (the EBM's fitted base)."""


@register_prior("gaussian")
class GaussianPrior(Prior):
    """The fixed N(0, I) (paper Table 8's baseline): E = 0, exact draws, log Z = 0."""
    exact = True

    def energy(self, z: torch.Tensor) -> torch.Tensor:
        return z.new_zeros(z.size(0))

    def sample(self, n, device, dtype, generator=None, steps=None, step_size=None, noise=None,
               sampler=None, z0=None, **trace):
        """Exact: z_0 * c, the stationary law N(0, c^2 I) of the chain at noise c, with no chain
        unless something along the chain is asked for (`trace`, `trace_at`)."""
        if trace.get("trace") or trace.get("trace_at"):
            return super().sample(n, device, dtype, generator, steps, step_size, noise, sampler,
                                  z0, **trace)
        noise = self.chain_cfg.noise0 if noise is None else noise
        z = init_z(n, self.latent_dim, device, generator, dtype)
        return z * noise, {"energies": [], "z_at": {}}


@register_prior("ebm")
class EnergyPrior(Prior):
    """p_alpha(z) ∝ exp(f_alpha(z)) N(0, I): f an MLP latent_dim -> hidden -> hidden -> 1
    (LeakyReLU, paper Table 6), E(z) = -f_alpha(z).

    With `base = "fitted"` it tilts p0 = N(mu, L L^T) instead, mu and L following a moving
    average of the posterior codes' moments (`observe`). In whitened coordinates u = L^-1 (z - mu)
    the model is the paper's form again, a tilt of N(0, I) by f(mu + L u), so the prior chain,
    AIS and plain Monte Carlo all run on u and map back (docs/coherence.md). Then
    U0(z) = E(z) + ||L^-1 (z - mu)||^2 / 2 + log det L."""

    def __init__(self, cfg: PriorConfig, chain: LangevinConfig):
        super().__init__(cfg, chain)
        self.net = nn.Sequential(
            nn.Linear(cfg.latent_dim, cfg.hidden), nn.LeakyReLU(cfg.leak),
            nn.Linear(cfg.hidden, cfg.hidden), nn.LeakyReLU(cfg.leak),
            nn.Linear(cfg.hidden, 1),
        )
        self.fitted = cfg.base == "fitted"
        if self.fitted:
            # Buffers, not parameters: moved by `observe`, saved in the state_dict.
            d = cfg.latent_dim
            self.register_buffer("base_mean", torch.zeros(d))
            self.register_buffer("base_second", torch.eye(d))   # moving E[z z^T]
            self.register_buffer("base_chol", torch.eye(d))     # L, Sigma = L L^T

    def energy(self, z: torch.Tensor) -> torch.Tensor:
        """E(z) = -f_alpha(z). z: (B, D) -> (B,)."""
        return -self.net(z).squeeze(-1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.energy(z)

    def prior_energy(self, z: torch.Tensor) -> torch.Tensor:
        if not self.fitted:
            return self.energy(z) + 0.5 * z.pow(2).sum(-1)
        logdet = self.base_chol.diagonal().log().sum()
        return self.energy(z) + 0.5 * self.to_u(z).pow(2).sum(-1) + logdet

    def to_z(self, u: torch.Tensor) -> torch.Tensor:
        return u if not self.fitted else self.base_mean + u @ self.base_chol.T

    def to_u(self, z: torch.Tensor) -> torch.Tensor:
        if not self.fitted:
            return z
        return torch.linalg.solve_triangular(self.base_chol, (z - self.base_mean).T, upper=False).T

    @torch.no_grad()
    def observe(self, z_pos: torch.Tensor) -> None:
        """Move the fitted base's mean and covariance towards the codes z_pos: (B, D)."""
        if not self.fitted:
            return
        decay = self.cfg.base_decay
        z = z_pos.detach().to(self.base_mean.dtype)
        self.base_mean.mul_(decay).add_(z.mean(0), alpha=1 - decay)
        self.base_second.mul_(decay).add_(z.T @ z / z.size(0), alpha=1 - decay)
        cov = self.base_second - torch.outer(self.base_mean, self.base_mean)
        chol, info = torch.linalg.cholesky_ex(cov + 1e-4 * torch.eye(cov.size(0), device=cov.device))
        # Keep the last factor where the covariance is not yet positive definite (decided on
        # the device: no host read per iteration).
        self.base_chol.copy_(torch.where(info == 0, chol, self.base_chol))

    def loss(self, z_pos: torch.Tensor, z_neg: torch.Tensor, train: TrainConfig
             ) -> tuple[torch.Tensor, dict]:
        """Algorithm 1's step 4: mean E(z+) - mean E(z-) (+ energy_reg x the mean squared
        energies, + grad_penalty x the mean squared slopes |dE/dz|^2 at both). Logs the two mean
        energies and their difference. z_pos: (B, D), z_neg: (M, D)."""
        loss, e_pos, e_neg = contrastive_loss(self.energy, z_pos, z_neg, train.energy_reg,
                                              train.grad_penalty)
        return loss, {"e_pos": e_pos, "e_neg": e_neg, "e_pos_minus_neg": e_pos - e_neg}


def contrastive_loss(energy, z_pos: torch.Tensor, z_neg: torch.Tensor, energy_reg: float,
                     grad_penalty: float = 0.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """mean E(z+) - mean E(z-) with its two regularisers, and the two mean energies (the
    negative of paper eq. 10's update, which raises f where the posterior puts z and lowers it
    where the prior chain wanders). energy: (B, D) -> (B,)."""
    if grad_penalty:
        z_pos, z_neg = z_pos.detach().requires_grad_(True), z_neg.detach().requires_grad_(True)
    en_pos, en_neg = energy(z_pos), energy(z_neg)
    e_pos, e_neg = en_pos.mean(), en_neg.mean()
    loss = e_pos - e_neg
    if energy_reg:
        # Without it, when the prior chain cannot reach where z+ lies, E+ - E- falls without
        # bound and the energies blow up (measured: |E| ~ 1e6 within 700 steps at lr 1e-3).
        loss = loss + energy_reg * (en_pos.pow(2).mean() + en_neg.pow(2).mean())
    if grad_penalty:
        # A steep energy digs wells narrower than a Langevin step, which the prior chain steps
        # over and so never lifts (docs/coherence.md); a bounded slope keeps them reachable.
        g_pos, g_neg = torch.autograd.grad(en_pos.sum() + en_neg.sum(), (z_pos, z_neg),
                                           create_graph=True)
        loss = loss + grad_penalty * (g_pos.pow(2).sum(-1).mean() + g_neg.pow(2).sum(-1).mean())
    return loss, e_pos, e_neg
