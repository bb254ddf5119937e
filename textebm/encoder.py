"""AmortizedInit: a small encoder that guesses where the posterior chain will end, z+ ≈ g(x).

Not a VAE encoder: nothing is sampled from it and no KL term exists. It is regressed onto the
chain's end point (a detached target), and the chain then starts at g(x) instead of N(0, I), so
K1 short steps refine a good guess instead of travelling from noise. Across iterations this
accumulates inference work the way a persistent chain does, but for any sentence, seen or not.
"""
from __future__ import annotations

import torch
from torch import nn

from corpora.vocab import PAD_ID
from textebm.config import EncoderConfig


class AmortizedInit(nn.Module):
    def __init__(self, cfg: EncoderConfig, vocab_size: int, latent_dim: int):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(vocab_size, cfg.embed, padding_idx=PAD_ID)
        self.rnn = nn.LSTM(cfg.embed, cfg.hidden, batch_first=True, bidirectional=True)
        self.out = nn.Linear(2 * cfg.hidden, latent_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, T) framed ids -> z guess: (B, D). Mean of the BiLSTM states over real tokens."""
        mask = (x != PAD_ID).unsqueeze(-1).to(self.out.weight.dtype)      # (B, T, 1)
        h, _ = self.rnn(self.embed(x))                                     # (B, T, 2H)
        pooled = (h * mask).sum(1) / mask.sum(1).clamp_min(1.0)
        return self.out(pooled)
