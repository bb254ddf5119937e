"""AmortizedInit: a small encoder that guesses where the posterior chain will end, z+ ≈ g(x).

Not a VAE encoder: nothing is sampled from it and no KL term exists. It is regressed onto the
chain's end point (a detached target), and the chain then starts at g(x) instead of N(0, I), so
K1 short steps refine a good guess instead of travelling from noise. Across iterations this
accumulates inference work the way a persistent chain does, but for any sentence, seen or not.
"""
from __future__ import annotations

import warnings

import torch
from torch import nn

from common.softmax import compacts
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

        The backward direction starts at each sentence's own last token, so g(x) does not depend
        on how much padding its batch-mates impose: on a host (common.softmax.compacts) the
        sequences are packed, which needs their lengths on the host; elsewhere (CUDA, where
        reading them back would stall every call) each row is reversed within its length
        instead (`_states_unpacked`, the same states to float rounding)."""
        mask = (x != PAD_ID).unsqueeze(-1).to(self.out.weight.dtype)      # (B, T, 1)
        if compacts(x.device):
            lengths = (x != PAD_ID).sum(1).clamp_min(1).cpu()
            packed = nn.utils.rnn.pack_padded_sequence(self.embed(x), lengths, batch_first=True,
                                                       enforce_sorted=False)
            h, _ = nn.utils.rnn.pad_packed_sequence(self.rnn(packed)[0], batch_first=True,
                                                    total_length=x.size(1))    # (B, T, 2H)
        else:
            h = self._states_unpacked(x)
        pooled = (h * mask).sum(1) / mask.sum(1).clamp_min(1.0)
        return self.out(pooled)

    def _states_unpacked(self, x: torch.Tensor) -> torch.Tensor:
        """The BiLSTM's states at x's real tokens without packing: (B, T, 2H), values at padding
        arbitrary (the caller masks them). The forward direction reads the padded batch as it
        is (padding only follows a sentence); the backward one reads each row reversed within its
        own length, n-1 .. 0 then the padding, and its states are put back in place."""
        B, T = x.shape
        n = (x != PAD_ID).sum(1, keepdim=True).clamp_min(1)               # (B, 1), on the device
        t = torch.arange(T, device=x.device).unsqueeze(0)
        flip = torch.where(t < n, n - 1 - t, t)                           # its own inverse
        rnn, emb = self.rnn, self.embed(x)
        h0 = emb.new_zeros(1, B, rnn.hidden_size)
        names = ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")
        fwd = [getattr(rnn, k) for k in names]
        bwd = [getattr(rnn, k + "_reverse") for k in names]

        def run(inp, w):  # one direction of the layer: torch.lstm with that direction's weights
            with warnings.catch_warnings():
                # cuDNN copies one direction's weights out of the module's flat buffer (a few
                # kernels per call) and says so; that copy is the price of not packing.
                warnings.filterwarnings("ignore", message="RNN module weights are not part")
                return torch.lstm(inp, (h0, h0), w, rnn.bias, 1, 0.0, self.training, False,
                                  True)[0]

        ahead = run(emb, fwd)
        back = run(emb.gather(1, flip.unsqueeze(-1).expand_as(emb)), bwd)
        back = back.gather(1, flip.unsqueeze(-1).expand_as(back))
        return torch.cat([ahead, back], -1)
