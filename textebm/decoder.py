"""LSTMDecoder: the generator p_beta(x|z), an autoregressive one-layer LSTM (paper eq. 4).

How z enters is not published; the project default follows the common text-VAE decoders:
z is concatenated to every input embedding and h0 = Linear(z), c0 = 0. Dropout on embeddings
and LSTM outputs; every parameter initialised from Unif(-0.1, 0.1) (paper B.1). Optional word
dropout (Bowman et al. 2016): in training, a share of the input words is read as <unk>, so that
what the decoder cannot read from the prefix it has to take from z.
"""
from __future__ import annotations

import torch
from torch import nn

from corpora.vocab import BOS_ID, EOS_ID, PAD_ID, UNK_ID
from textebm.config import DecoderConfig
from common.precision import autocast
from common.softmax import compacts, sentence_log_probs

MAX_LOGITS = 2**24  # rows x positions x vocabulary of one scoring call: 64 MB of fp32 logits


class LSTMDecoder(nn.Module):
    def __init__(self, cfg: DecoderConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.embed)
        self.lstm = nn.LSTM(cfg.embed + cfg.latent_dim, cfg.hidden, batch_first=True)
        self.z_to_h = nn.Linear(cfg.latent_dim, cfg.hidden)
        self.drop = nn.Dropout(cfg.dropout)
        self.proj = nn.Linear(cfg.hidden, cfg.vocab_size)
        for p in self.parameters():
            nn.init.uniform_(p, -cfg.init_range, cfg.init_range)
        # Compute precision of the LSTM and the softmax matmuls (common.precision); weights,
        # log-probs and gradients w.r.t. z stay fp32. Not part of the state_dict.
        self.compute_dtype = torch.float32

    def token_cap(self, max_logits: int = MAX_LOGITS) -> int:
        """Target positions (rows x length) per call whose logits stay under `max_logits`
        floats: what evaluation batches are cut to, so that Yahoo-length text fits in memory."""
        return max(1, max_logits // self.proj.out_features)

    def _init_state(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h0 = self.z_to_h(z).unsqueeze(0)
        return h0, torch.zeros_like(h0)

    def log_prob(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """log p(x|z) summed over each sentence's scored tokens (words and `</s>`).

        x: (B, T) long, framed `<s> w1 .. wn </s> <pad>..`; z: (B, D) -> (B,).
        The output projection and softmax run only at real (non-pad) target positions.
        """
        inp = x[:, :-1]
        if self.training and self.cfg.word_dropout:
            hide = torch.rand(inp.shape, device=inp.device) < self.cfg.word_dropout
            hide[:, 0] = False  # <s> stays
            inp = inp.masked_fill(hide & (inp != PAD_ID), UNK_ID)
        emb = self.drop(self.embed(inp))
        zz = z.unsqueeze(1).expand(-1, inp.size(1), -1)
        with autocast(x.device.type, self.compute_dtype):
            out, _ = self.lstm(torch.cat([emb, zz], -1), self._init_state(z))
        return sentence_log_probs(out, x, self.proj, self.drop, self.compute_dtype)

    @torch.no_grad()
    def generate(self, z: torch.Tensor, max_len: int = 60, greedy: bool = False,
                 temperature: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
        """Decode one sentence per z, all in parallel. z: (B, D) -> ids (B, L) ending in `</s>`
        (or cut at max_len), `<pad>` after it. Ancestral sampling unless `greedy`.

        Finished sentences leave the batch, so the work per step shrinks as sentences end; on a
        GPU (not common.softmax.compacts) that would make the host wait for the device at every
        token, and there `_generate_fixed` keeps the batch whole instead.
        Sampling inverts the CDF (cumsum + searchsorted): exact, and far faster on CPU than
        torch.multinomial over a 10k vocabulary.
        """
        if not compacts(z.device):
            return self._generate_fixed(z, max_len, greedy, temperature, generator)
        B = z.size(0)
        h, c = self._init_state(z)
        out = torch.full((B, max_len), PAD_ID, dtype=torch.long, device=z.device)
        active = torch.arange(B, device=z.device)
        tok = torch.full((B,), BOS_ID, dtype=torch.long, device=z.device)
        zin, t = z, 0
        for t in range(max_len):
            tok, (h, c) = self._next(tok, zin, (h, c), greedy, temperature, generator)
            out[active, t] = tok
            going = tok != EOS_ID
            if not bool(going.all()):
                active, tok, zin = active[going], tok[going], zin[going]
                h, c = h[:, going], c[:, going]
                if active.numel() == 0:
                    break
        return out[:, : t + 1]

    def _next(self, tok: torch.Tensor, zin: torch.Tensor, state, greedy: bool, temperature: float,
              generator: torch.Generator | None):
        """One decoding step for the rows of tok: (n,) given z: (n, D). -> next tokens, state."""
        with autocast(zin.device.type, self.compute_dtype):
            o, state = self.lstm(torch.cat([self.embed(tok), zin], -1).unsqueeze(1), state)
            logits = self.proj(o[:, 0]).float()
        if greedy:
            return logits.argmax(-1), state
        cdf = torch.softmax(logits / temperature, -1).cumsum(-1)
        u = torch.rand(cdf.size(0), 1, generator=generator, device=zin.device, dtype=cdf.dtype)
        return torch.searchsorted(cdf, u * cdf[:, -1:]).squeeze(1).clamp_(max=cdf.size(1) - 1), state

    # Tokens between two checks of whether every sentence has ended (one host sync each).
    CHECK_EVERY = 8

    @torch.no_grad()
    def _generate_fixed(self, z: torch.Tensor, max_len: int, greedy: bool, temperature: float,
                        generator: torch.Generator | None) -> torch.Tensor:
        """`generate` without data-dependent shapes: every row steps until all have ended
        (checked every CHECK_EVERY tokens), a finished row writing `<pad>`; one more host read at
        the end cuts the width to the longest sentence, as `generate` returns it. The same law
        of sentences; not the same draws (a finished row still draws its uniform)."""
        B = z.size(0)
        state = self._init_state(z)
        out = torch.full((B, max_len), PAD_ID, dtype=torch.long, device=z.device)
        tok = torch.full((B,), BOS_ID, dtype=torch.long, device=z.device)
        done = torch.zeros(B, dtype=torch.bool, device=z.device)
        length = torch.zeros(B, dtype=torch.long, device=z.device)   # tokens written, </s> included
        for t in range(max_len):
            tok, state = self._next(tok, z, state, greedy, temperature, generator)
            tok = tok.masked_fill(done, PAD_ID)
            out[:, t] = tok
            length += ~done
            done = done | (tok == EOS_ID)
            if (t + 1) % self.CHECK_EVERY == 0 and bool(done.all()):
                break
        return out[:, : max(int(length.max()), 1)] if B else out   # (0, max_len), as generate
