"""Short-run Langevin dynamics: the one place where the update rule lives (PROTOCOL.md §2).

For a target pi(z) ∝ exp(-U(z)) and step size s:

    z_{k+1} = z_k - (s^2 / 2) * dU/dz(z_k) + s * eps_k,    eps_k ~ N(0, I),  z_0 ~ N(0, I)

This is the paper's eq. 9 with its step s' = s^2/2, so s is the "step size" of paper Table 5
(s0 = 0.4 for the prior, s1 = 0.1 for the posterior). Chains restart from N(0, I) at every call
(short-run, not persistent). `U` returns one energy per chain; they are summed before the
gradient, so each chain moves independently of the batch it sits in.
"""
from __future__ import annotations

from typing import Callable

import torch

Energy = Callable[[torch.Tensor], torch.Tensor]


def langevin(energy: Energy, z: torch.Tensor, steps: int, step_size: float,
             generator: torch.Generator | None = None, trace: bool = False,
             trace_at: tuple[int, ...] = ()) -> tuple[torch.Tensor, dict]:
    """Run `steps` Langevin steps on `U = energy` from z: (B, D). Gradients are w.r.t. z only.

    Returns the final z (detached) and a dict with, if `trace`, `energies`: (steps+1, B) U along
    the chain, and, for each k in `trace_at`, `z_at[k]`: (B, D) the state after k steps.
    """
    info: dict = {"energies": [], "z_at": {}}
    z = z.detach()
    half_s2 = 0.5 * step_size * step_size
    with torch.enable_grad():
        for k in range(steps + 1):
            if k in trace_at:
                info["z_at"][k] = z
            if k == steps and not trace:
                break
            z = z.requires_grad_(True)
            u = energy(z)
            if trace:
                info["energies"].append(u.detach())
            if k == steps:
                break
            (grad,) = torch.autograd.grad(u.sum(), z)
            noise = torch.randn(z.shape, generator=generator, device=z.device, dtype=z.dtype)
            z = (z - half_s2 * grad + step_size * noise).detach()
    if trace:
        info["energies"] = torch.stack(info["energies"])
    return z.detach(), info


def init_z(n: int, dim: int, device: torch.device | str = "cpu",
           generator: torch.Generator | None = None, dtype: torch.dtype | None = None) -> torch.Tensor:
    """z_0 ~ N(0, I): (n, dim)."""
    return torch.randn(n, dim, generator=generator, device=device, dtype=dtype)
