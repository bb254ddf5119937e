"""The amortized posterior q(z|x) (textebm/posterior/amortized.py): its density, its ELBO terms
against torch.distributions, and what one training iteration moves."""
import pytest
import torch

from corpora.batching import frame
from corpora.vocab import Vocab
from textebm.config import build_config
from textebm.model import build_model
from textebm.train import make_optimizers, train_step

D = 32


def amortized_model(demo, free_bits=0.0, kind="ebm"):
    cfg = build_config("demo", "amortized")
    cfg.prior.kind = kind
    cfg.decoder.embed, cfg.decoder.hidden = 16, 32
    cfg.langevin.k0 = 10
    cfg.encoder.free_bits = free_bits
    vocab = Vocab.build(demo.train)
    cfg.decoder.vocab_size = len(vocab)
    torch.manual_seed(0)
    m = build_model(cfg)
    x = frame([vocab.encode(s) for s in demo.train[:16]])
    return cfg, m, x


def test_q_density_and_kl_agree_with_torch_distributions(demo):
    cfg, m, x = amortized_model(demo)
    q = m.posterior
    mu, logvar = q.moments(x)
    dist = torch.distributions.Independent(torch.distributions.Normal(mu, (0.5 * logvar).exp()), 1)
    z = dist.sample((5,)).transpose(0, 1)                      # (B, 5, D)
    torch.testing.assert_close(q.log_q(z, mu, logvar), dist.log_prob(z.transpose(0, 1)).T)
    # The ELBO's prior part, with the EBM at its init: E_q[E(z)] at one draw plus KL(q || N(0, I)).
    torch.manual_seed(3)
    z1, loss, logs = q.train_codes(m, x)
    std = torch.distributions.Independent(torch.distributions.Normal(torch.zeros(D), 1.0), 1)
    kl = torch.distributions.kl_divergence(dist, std).mean()
    torch.testing.assert_close(logs["kl"], kl.detach())
    torch.testing.assert_close(loss, m.energy(z1).mean() + kl)


def test_free_bits_hold_each_dimension_at_its_threshold(demo):
    """Below the threshold a dimension's KL counts as the threshold: its gradient is gone, and the
    loss's gradient is the energy term's alone (with free bits 0 the KL's gradient is there)."""
    w = lambda m: m.posterior.encoder.out.weight  # noqa: E731
    for bits, kl_counts in ((5.0, False), (0.0, True)):   # 5 nats: far above any KL at init
        cfg, m, x = amortized_model(demo, free_bits=bits)
        torch.manual_seed(5)
        _, loss, logs = m.posterior.train_codes(m, x)
        (g_loss,) = torch.autograd.grad(loss, w(m))
        torch.manual_seed(5)
        z, _, _ = m.posterior.draw(x)
        (g_energy,) = torch.autograd.grad(m.energy(z).mean(), w(m))
        if not kl_counts:
            assert float(loss.detach() - logs["e_q"]) == pytest.approx(5.0 * D, rel=1e-6)
        assert torch.allclose(g_loss, g_energy, atol=1e-7) != kl_counts


def test_one_iteration_trains_encoder_and_decoder_jointly_and_the_prior_contrastively(demo):
    cfg, m, x = amortized_model(demo)
    opts = make_optimizers(m, cfg)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    # The EBM's learning rate at 0: whatever moves it can only be its own optimizer's step, so
    # the ELBO (which holds E(z)) must leave its weights alone.
    for g in opts["prior"].param_groups:
        g["lr"] = 0.0
    logs, z = train_step(m, x, opts, cfg)
    after = m.state_dict()
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert any(k.startswith("posterior.encoder.") for k in moved)   # through the reparameterization
    assert any(k.startswith("decoder.") for k in moved)
    assert not any(k.startswith("prior.") for k in moved)
    assert not z.requires_grad and {"kl", "e_q", "e_pos", "e_neg"} <= set(logs)
    assert "init_err" not in logs   # no regression step: q learns on the ELBO alone


def test_the_gaussian_twin_is_a_text_vae(demo):
    """With the fixed N(0, I) prior the same posterior's loss is the VAE's: reconstruction + KL."""
    cfg, m, x = amortized_model(demo, kind="gaussian")
    assert "prior" not in make_optimizers(m, cfg)
    _, loss, logs = m.posterior.train_codes(m, x)
    assert float(logs["e_q"]) == 0.0 and float(loss.detach()) == pytest.approx(float(logs["kl"]))
