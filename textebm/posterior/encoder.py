"""Langevin from an amortized guess (`init1 = encoder`): the chain starts at g(x), a small BiLSTM
(textebm.encoder.AmortizedInit) regressed after each iteration onto the chain's end point z+.

g never replaces the chain, it starts it nearer its target, so K1 short steps refine a good
guess instead of travelling from noise. Across iterations this accumulates inference work the way
a persistent chain does, but for any sentence, seen or not. g(x) is also the code of the
autoencoder pretraining (train.pretrain_steps)."""
from __future__ import annotations

import torch

from textebm.config import EncoderConfig, LangevinConfig
from textebm.encoder import AmortizedInit
from textebm.posterior.base import Posterior, register_posterior


@register_posterior("encoder")
class FromEncoder(Posterior):
    has_code = True

    def __init__(self, chain: LangevinConfig, encoder: EncoderConfig, vocab_size: int,
                 latent_dim: int):
        super().__init__(chain, encoder, vocab_size, latent_dim)
        self.encoder = AmortizedInit(encoder, vocab_size, latent_dim)

    def start(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """g(x), without gradient. x: (B, T) -> (B, D)."""
        with torch.no_grad():
            return self.encoder(x)

    def code(self, x: torch.Tensor) -> torch.Tensor:
        """g(x) with its gradient. x: (B, T) -> (B, D)."""
        return self.encoder(x)

    def loss(self, x: torch.Tensor, z_pos: torch.Tensor) -> torch.Tensor:
        """Regression of g(x) onto the chain's end: mean_i ||g(x_i) - z+_i||^2."""
        return (self.encoder(x) - z_pos).pow(2).sum(-1).mean()
