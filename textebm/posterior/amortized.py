"""Amortized inference (`init1 = amortized`): q(z|x) = N(mu(x), diag sigma^2(x)), reparameterized.

The way the authors' later text code (SVEBM, LDEBM) trains the latent EBM: no posterior chain in
training. Encoder and decoder take one step together on the negative ELBO with the prior in it,

    -ELBO = -E_q[log p(x|z)] + E_q[E(z)] + KL(q || N(0, I)) + log Z        (U0 = E + ||z||^2/2),

(log Z does not depend on them, so it is left out), z = mu + sigma * eps, one draw per sentence;
the prior then learns at z_q = the draw, as Algorithm 1's prior step learns at z+. A text VAE is
the same posterior with the fixed N(0, I) prior (E = 0). Free bits (Kingma et al. 2016):
each latent dimension's KL, averaged over the batch, counts at least `encoder.free_bits` nats,
so the encoder gains nothing by collapsing a dimension below it.

Reading a trained model: `infer` draws z ~ q(z|x) (read: z = mu(x)), then K1 Langevin steps on
the true posterior from there (langevin.k1; 0 by default: q alone).
"""
from __future__ import annotations

import math

import torch

from textebm.config import EncoderConfig, LangevinConfig
from textebm.encoder import AmortizedInit
from textebm.posterior.base import Posterior, register_posterior


@register_posterior("amortized")
class Amortized(Posterior):
    reparameterized = True
    has_code = True

    def __init__(self, chain: LangevinConfig, encoder: EncoderConfig, vocab_size: int,
                 latent_dim: int):
        super().__init__(chain, encoder, vocab_size, latent_dim)
        # The BiLSTM of the chain's amortized start, with twice the outputs: mu and log sigma^2.
        self.encoder = AmortizedInit(encoder, vocab_size, 2 * latent_dim)
        self.free_bits = encoder.free_bits

    def moments(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """mu, log sigma^2 of q(z|x). x: (B, T) -> (B, D), (B, D)."""
        mu, logvar = self.encoder(x).chunk(2, dim=-1)
        return mu, logvar.clamp(-12.0, 6.0)  # a bounded scale: exp() neither under- nor overflows

    def start(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """mu(x), without gradient: where an importance or AIS chain for x starts."""
        with torch.no_grad():
            return self.moments(x)[0]

    def code(self, x: torch.Tensor) -> torch.Tensor:
        """mu(x) with its gradient (autoencoder pretraining, train.pretrain_steps)."""
        return self.moments(x)[0]

    def draw(self, x: torch.Tensor, generator: torch.Generator | None = None
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """z = mu + sigma * eps ~ q(z|x) with its gradient, and mu, log sigma^2. (B, D) each."""
        mu, logvar = self.moments(x)
        eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        return mu + (0.5 * logvar).exp() * eps, mu, logvar

    def log_q(self, z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """log q(z|x) for z: (B, K, D) against mu, logvar: (B, D) -> (B, K)."""
        return GaussianProposal(mu, logvar).log_prob(z)

    def proposal(self, x: torch.Tensor) -> "GaussianProposal":
        """q(z|x) itself, the text-VAE standard proposal of the importance-weighted NLL."""
        with torch.no_grad():
            return GaussianProposal(*self.moments(x))

    def train_codes(self, model, x: torch.Tensor, z0: torch.Tensor | None = None):
        """The codes the decoder learns at, with their gradient, and the ELBO's other terms:
        mean E(z) + sum_d max(mean KL_d, free_bits). -> z: (B, D), loss, logs."""
        z, mu, logvar = self.draw(x)
        kl_d = 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)            # (B, D)
        kl = kl_d.sum(-1).mean()
        kl_term = kl_d.mean(0).clamp_min(self.free_bits).sum() if self.free_bits else kl
        # The prior's weights learn by their own (contrastive) step, not through the ELBO.
        from textebm.model import frozen
        with frozen(model.prior):
            e_q = model.energy(z).mean()
        return z, e_q + kl_term, {"kl": kl.detach(), "e_q": e_q.detach()}

    def infer(self, model, x: torch.Tensor, steps: int | None = None,
              step_size: float | list[float] | None = None,
              generator: torch.Generator | None = None, z0: torch.Tensor | None = None,
              read: bool = False, **trace) -> tuple[torch.Tensor, dict]:
        """z ~ q(z|x) (read: mu(x)), then K1 steps of the posterior chain from there."""
        if z0 is None:
            with torch.no_grad():
                z0 = self.moments(x)[0] if read else self.draw(x, generator)[0]
        return super().infer(model, x, steps, step_size, generator, z0, read, **trace)


class GaussianProposal:
    """N(mu_b, diag exp(logvar_b)) per sentence b: mu, logvar: (B, D)."""

    def __init__(self, mu: torch.Tensor, logvar: torch.Tensor):
        self.mu, self.logvar = mu, logvar

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n draws per sentence: (B, n, D)."""
        B, D = self.mu.shape
        eps = torch.randn(B, n, D, generator=generator, device=self.mu.device, dtype=self.mu.dtype)
        return self.mu[:, None] + (0.5 * self.logvar[:, None]).exp() * eps

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log q(z): z: (B, K, D) -> (B, K)."""
        d = (z - self.mu[:, None]) * (-0.5 * self.logvar[:, None]).exp()
        return -0.5 * (d.pow(2) + self.logvar[:, None] + math.log(2 * math.pi)).sum(-1)
