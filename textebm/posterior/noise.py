"""Langevin from N(0, I): the posterior chain of paper Algorithm 1 (`init1 = noise`), and the same
chain warm-started in training from each sentence's last z+ (`init1 = persistent`: the bank lives
in textebm.train; reading a trained model starts from N(0, I))."""
from __future__ import annotations

import torch

from textebm.langevin import init_z
from textebm.posterior.base import Posterior, register_posterior


@register_posterior("noise")
@register_posterior("persistent")
class FromNoise(Posterior):
    def start(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """z_0 ~ N(0, I). x: (B, T) -> (B, D)."""
        return init_z(x.size(0), self.latent_dim, self._like.device, generator, self._like.dtype)
