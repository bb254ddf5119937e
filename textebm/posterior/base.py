"""The posterior interface and its registry; the short-run Langevin chain that the paper's
posteriors share (PROTOCOL.md §2, paper eq. 9 on U1(z|x) = U0(z) - log p_beta(x|z))."""
from __future__ import annotations

import torch
from torch import nn

from textebm.config import EncoderConfig, LangevinConfig
from textebm.langevin import langevin

POSTERIORS: dict[str, type["Posterior"]] = {}


def register_posterior(name: str):
    """Class decorator: make a Posterior subclass the one `langevin.init1 = name` builds."""
    def add(cls: type[Posterior]) -> type[Posterior]:
        POSTERIORS[name] = cls
        return cls
    return add


def build_posterior(chain: LangevinConfig, encoder: EncoderConfig, vocab_size: int,
                    latent_dim: int) -> "Posterior":
    """The posterior `chain.init1` names."""
    if chain.init1 not in POSTERIORS:
        raise ValueError(f"posterior chain start (init1) must be one of {', '.join(POSTERIORS)}, "
                         f"got {chain.init1!r}")
    return POSTERIORS[chain.init1](chain, encoder, vocab_size, latent_dim)


class Posterior(nn.Module):
    """z ~ p(z|x) for x: (B, T) framed ids, with the run's chain settings `chain_cfg`.

    The default is the short-run posterior chain: K1 Langevin steps on U1(z|x) from `start(x)`.
    A subclass changes where the chain starts (`start`), what it learns after an iteration
    (`loss`) and whether it has an amortized code (`code`)."""

    def __init__(self, chain: LangevinConfig, encoder: EncoderConfig, vocab_size: int,
                 latent_dim: int):
        super().__init__()
        self.chain_cfg, self.latent_dim = chain, latent_dim
        # Follows the model's .to() and .double() without entering the state_dict: the device
        # and dtype of the codes, which a posterior without parameters cannot read elsewhere.
        self.register_buffer("_like", torch.zeros(0), persistent=False)

    # True: `train_codes` returns codes with their gradient and a loss, and the posterior's
    # weights learn in one step with the decoder's (amortized q); False: a chain's codes.
    reparameterized = False
    # True: `code(x)` gives an amortized code (what the autoencoder pretraining trains).
    has_code = False

    def train_codes(self, model, x: torch.Tensor, z0: torch.Tensor | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor | None, dict]:
        """The codes an iteration of training learns at for x: (B, T), from z0 if given (a
        persistent chain), the posterior's part of the decoder's loss (None: none) and tensors
        to log. By default the training chain's end point z+ (Algorithm 1, step 2)."""
        return self.infer(model, x, z0=z0)[0], None, {}

    def start(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Where a chain for x starts when no warm start is given. x: (B, T) -> (B, D)."""
        raise NotImplementedError

    def code(self, x: torch.Tensor) -> torch.Tensor | None:
        """An amortized code for x with its gradient (the autoencoder pretraining of
        train.pretrain_steps), or None where the posterior has none. x: (B, T) -> (B, D)."""
        return None

    def proposal(self, x: torch.Tensor):
        """An importance proposal q(z|x) for the NLL (an object with `sample(n, generator)` ->
        (B, n, D) and `log_prob(z: (B, n, D))` -> (B, n)), or None where the posterior has none
        (textebm.nll then fits its own proposal to the posterior)."""
        return None

    def loss(self, x: torch.Tensor, z_pos: torch.Tensor) -> torch.Tensor | None:
        """The posterior's own training loss after an iteration that inferred z_pos: (B, D) for
        x, or None where it learns nothing."""
        return None

    def infer(self, model, x: torch.Tensor, steps: int | None = None,
              step_size: float | list[float] | None = None,
              generator: torch.Generator | None = None, z0: torch.Tensor | None = None,
              read: bool = False, **trace) -> tuple[torch.Tensor, dict]:
        """z ~ the short-run posterior chain of `model` (a LatentEBM) for x: (B, T) -> (B, D):
        K1 steps, the run's step sizes and noise, from z0 (default `start`). `read`: the chain
        that reads a trained model (read_schedule, read_noise1) instead of the training chain.

        The decoder runs without dropout inside the chain (the chain targets the model's
        posterior, not a randomly thinned one); the caller's train/eval mode is restored."""
        from textebm.model import frozen
        cfg = self.chain_cfg
        steps = cfg.k1 if steps is None else steps
        step_size = cfg.posterior_step_sizes(read) if step_size is None else step_size
        was_training = model.training
        model.eval()
        try:
            if z0 is None:
                z0 = self.start(x, generator)
            with frozen(model):
                return langevin(lambda z: model.posterior_energy(z, x), z0, steps, step_size,
                                generator, noise=cfg.posterior_noise(read), **trace)
        finally:
            model.train(was_training)
