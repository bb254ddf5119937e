"""EnergyPrior: p_alpha(z) ∝ exp(f_alpha(z)) N(0, I), coded through the energy E(z) = -f_alpha(z).

Lower energy = more probable. The Gaussian reference term ||z||^2/2 is added by the samplers
and `LatentEBM`, not here.
"""
from __future__ import annotations

import torch
from torch import nn

from textebm.config import PriorConfig


class EnergyPrior(nn.Module):
    def __init__(self, cfg: PriorConfig):
        super().__init__()
        self.cfg = cfg
        self.net = nn.Sequential(
            nn.Linear(cfg.latent_dim, cfg.hidden), nn.LeakyReLU(cfg.leak),
            nn.Linear(cfg.hidden, cfg.hidden), nn.LeakyReLU(cfg.leak),
            nn.Linear(cfg.hidden, 1),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """E(z) = -f_alpha(z). z: (B, D) -> (B,)."""
        return -self.net(z).squeeze(-1)
