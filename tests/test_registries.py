"""A third prior, registered from this file alone (no edit under textebm/), trains and samples.

The prior interface (textebm.prior.Prior) is what training, sampling, the likelihood and loading
use; if any of them still branched on the EBM or the Gaussian by name, this prior would fail there.
"""
import math

import pytest
import torch
from torch import nn

from textebm.api import load
from textebm.config import build_config
from textebm.nll import partition
from textebm.prior import PRIORS, Prior, register_prior
from textebm.train import TrainSetup, train

K = 3  # components


@pytest.fixture
def mixture_kind():
    """A learned Gaussian mixture prior: sum_k w_k N(mu_k, I), exact draws, log Z = 0."""

    @register_prior("mixture")
    class Mixture(Prior):
        exact = True

        def __init__(self, cfg, chain):
            super().__init__(cfg, chain)
            gen = torch.Generator().manual_seed(1)
            self.means = nn.Parameter(2.0 * torch.randn(K, cfg.latent_dim, generator=gen))
            self.logits = nn.Parameter(torch.zeros(K))

        def prior_energy(self, z):
            """-log p(z) - (D/2) log 2 pi: the N(0, I) base's convention (U0 = ||z||^2 / 2)."""
            sq = (z[:, None, :] - self.means).pow(2).sum(-1)                     # (B, K)
            return -torch.logsumexp(self.logits.log_softmax(0) - 0.5 * sq, dim=1)

        def sample(self, n, device, dtype, generator=None, steps=None, step_size=None,
                   noise=None, sampler=None, z0=None, **trace):
            with torch.no_grad():
                k = torch.multinomial(self.logits.softmax(0), n, replacement=True,
                                      generator=generator)
                eps = torch.randn(n, self.latent_dim, generator=generator, device=device,
                                  dtype=dtype)
                return self.means[k] + eps, {"energies": [], "z_at": {}}

        def loss(self, z_pos, z_neg, train_cfg):
            """Maximum likelihood at the codes: a normalised prior needs no negatives."""
            nll = self.prior_energy(z_pos.detach()).mean()
            return nll, {"prior_nll": nll}

    yield "mixture"
    PRIORS.pop("mixture")


def mixture_density(model, z):
    """log p(z) by torch.distributions, independent of the prior's own code."""
    p = model.prior
    mix = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(logits=p.logits),
        torch.distributions.Independent(torch.distributions.Normal(p.means, 1.0), 1))
    return mix.log_prob(z)


def test_a_registered_third_prior_trains_three_iterations_and_samples(mixture_kind, demo, tmp_path):
    cfg = build_config("demo", flags={"prior": {"kind": mixture_kind},
                                      "train": {"max_steps": 3, "batch_size": 16, "eval_every": 3,
                                                "eval_sentences": 20}})
    cfg.decoder.embed, cfg.decoder.hidden = 16, 32
    cfg.langevin.k1 = 3
    summary = train(cfg, demo, TrainSetup(tmp_path / "run", torch.device("cpu"), progress=False))
    assert summary["step"] == 3

    m = load(tmp_path / "run")
    assert type(m.model.prior).__name__ == "Mixture" and m.config.prior.kind == "mixture"
    # It learned: its weights moved from their initial values by the three ML steps.
    fresh = PRIORS["mixture"](cfg.prior, cfg.langevin)
    assert not torch.equal(fresh.means, m.model.prior.means)
    # The prior's energy is its density under the project's convention, and log_joint agrees
    # with an independent computation of log p(z) + log p(x|z).
    z = torch.randn(5, 32)
    want = mixture_density(m.model, z)
    got = -m.model.prior_energy(z) - 16 * math.log(2 * math.pi)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    # Exact and normalised: log Z is 0 without AIS.
    assert partition(m.model, None)["log_z"] == 0.0
    # Samples: z from the mixture itself (its mean is the weighted component mean) and sentences.
    s = m.sample_chains(4000, seed=0)
    w = m.model.prior.logits.softmax(0)
    mean = (w[:, None] * m.model.prior.means).sum(0)
    assert (s.z.mean(0) - mean).abs().max() < 0.15
    assert len(s.sentences) == 4000 and all(isinstance(t, str) for t in s.sentences[:5])
    # What it logged is its own (its loss), beside the fields every prior logs.
    import json
    lines = [json.loads(ln) for ln in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    steps = [ln for ln in lines if "prior_nll" in ln]
    assert len(steps) == 3 and all("z_neg_norm" in ln for ln in steps)


@pytest.fixture
def origin_kind():
    """A posterior whose chain starts at the origin: Langevin from z = 0 instead of N(0, I)."""
    from textebm.posterior import POSTERIORS, Posterior, register_posterior

    @register_posterior("origin")
    class FromOrigin(Posterior):
        def start(self, x, generator=None):
            return self._like.new_zeros(x.size(0), self.latent_dim)

    yield "origin"
    POSTERIORS.pop("origin")


def test_a_registered_posterior_is_what_training_and_the_api_infer_with(origin_kind, demo, tmp_path):
    cfg = build_config("demo", flags={"langevin": {"init1": origin_kind},
                                      "train": {"max_steps": 2, "batch_size": 16, "eval_every": 0}})
    cfg.decoder.embed, cfg.decoder.hidden = 16, 32
    cfg.langevin.k0, cfg.langevin.k1 = 5, 3
    train(cfg, demo, TrainSetup(tmp_path / "run", torch.device("cpu"), progress=False))
    m = load(tmp_path / "run")
    assert type(m.model.posterior).__name__ == "FromOrigin"
    assert not list(m.model.posterior.parameters())   # no network: no "encoder" optimizer
    assert "encoder" not in torch.load(tmp_path / "run" / "checkpoint.pt",
                                       weights_only=True)["optimizers"]
    sents = ["the chef stirred the soup .", "the striker kicked the ball ."]
    x = m.encode(sents).ids
    from corpora.batching import frame
    assert torch.equal(m.model.chain_start(frame(x)), torch.zeros(2, 32))
    # The API's reading chain starts where the posterior says: with no steps, at the origin;
    # with steps and no noise, the same point for any seed (the start holds no randomness).
    assert torch.equal(m.infer(sents, steps=0, seed=0), torch.zeros(2, 32))
    assert torch.equal(m.infer(sents, seed=0), m.infer(sents, seed=1))
