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
        """x: (B, T) framed ids -> z guess: (B, D). Mean of the BiLSTM states over real tokens.

        The sequences are packed, so the backward direction starts at each sentence's own last
        token: g(x) does not depend on how much padding its batch-mates impose."""
        mask = (x != PAD_ID).unsqueeze(-1).to(self.out.weight.dtype)      # (B, T, 1)
        lengths = (x != PAD_ID).sum(1).clamp_min(1).cpu()
        packed = nn.utils.rnn.pack_padded_sequence(self.embed(x), lengths, batch_first=True,
                                                   enforce_sorted=False)
        h, _ = nn.utils.rnn.pad_packed_sequence(self.rnn(packed)[0], batch_first=True,
                                                total_length=x.size(1))    # (B, T, 2H)
        pooled = (h * mask).sum(1) / mask.sum(1).clamp_min(1.0)
        return self.out(pooled)
