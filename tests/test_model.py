"""The latent-EBM model: energies, gradients, chain independence and the signs of Algorithm 1."""
import copy

import pytest
import torch

from corpora.batching import frame
from textebm.config import DecoderConfig, LangevinConfig, PriorConfig, RunConfig
from textebm.model import LatentEBM
from textebm.train import make_optimizers, train_step


def tiny_model(kind="ebm", dtype=torch.float32, seed=0):
    torch.manual_seed(seed)
    m = LatentEBM(PriorConfig(latent_dim=4, hidden=16, kind=kind),
                  DecoderConfig(vocab_size=12, embed=8, hidden=10, latent_dim=4, dropout=0.0),
                  LangevinConfig(k0=10, s0=0.4, k1=5, s1=0.1))
    return m.to(dtype)


SENTS = [[4, 5, 6], [7, 8], [9, 10, 11, 4, 5], [6]]


def test_posterior_energy_gradient_matches_finite_differences():
    m = tiny_model(dtype=torch.float64).eval()
    x = frame(SENTS)
    z = torch.randn(len(SENTS), 4, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(m.posterior_energy(z, x).sum(), z)
    eps = 1e-6
    fd = torch.zeros_like(z)
    with torch.no_grad():
        for i in range(z.size(0)):
            for d in range(z.size(1)):
                e = torch.zeros_like(z)
                e[i, d] = eps
                fd[i, d] = (m.posterior_energy(z + e, x) - m.posterior_energy(z - e, x))[i] / (2 * eps)
    assert torch.allclose(grad, fd, atol=1e-7, rtol=1e-6)


def test_log_prob_does_not_depend_on_padding_or_batch_mates():
    m = tiny_model().eval()
    z = torch.randn(len(SENTS), 4)
    batch = m.decoder.log_prob(frame(SENTS), z)
    alone = torch.stack([m.decoder.log_prob(frame([s]), z[i:i + 1])[0] for i, s in enumerate(SENTS)])
    assert torch.allclose(batch, alone, atol=1e-5)


def test_posterior_chain_is_independent_of_batch_mates():
    m = tiny_model().eval()
    a = [4, 5, 6]
    za, _ = m.infer(frame([a, [7, 8]]), generator=torch.Generator().manual_seed(0))
    zb, _ = m.infer(frame([a, [9, 10, 11, 4, 5, 6, 7]]), generator=torch.Generator().manual_seed(0))
    assert torch.allclose(za[0], zb[0], atol=1e-5)
    assert not torch.allclose(za[1], zb[1])


def test_gaussian_prior_has_zero_energy_and_exact_log_joint():
    m = tiny_model("gaussian").eval()
    z = torch.randn(len(SENTS), 4)
    x = frame(SENTS)
    assert torch.equal(m.energy(z), torch.zeros(len(SENTS)))
    expected = torch.distributions.Normal(0, 1).log_prob(z).sum(-1) + m.decoder.log_prob(x, z)
    assert torch.allclose(m.log_joint(x, z), expected, atol=1e-5)


def test_one_prior_update_raises_f_at_posterior_relative_to_prior_samples():
    m = tiny_model()
    cfg = RunConfig()
    cfg.train.lr_prior, cfg.train.lr_decoder = 1e-2, 0.0
    opts = make_optimizers(m, cfg)
    x = frame(SENTS)
    torch.manual_seed(0)
    z_pos = torch.randn(4, 4) + 1.5
    z_neg = torch.randn(4, 4)
    gap_before = (m.energy(z_pos).mean() - m.energy(z_neg).mean()).item()
    # Reproduce train_step's prior update on fixed samples.
    loss = m.energy(z_pos).mean() - m.energy(z_neg).mean()
    opts["prior"].zero_grad()
    loss.backward()
    opts["prior"].step()
    gap_after = (m.energy(z_pos).mean() - m.energy(z_neg).mean()).item()
    # f = -E: f rises at z+ relative to z-, i.e. the energy gap E(z+) - E(z-) falls.
    assert gap_after < gap_before
    # And the full train_step moves the same way on average over a few steps.
    cfg.langevin = m.langevin_cfg
    gaps = [train_step(m, x, opts, cfg)[0]["e_pos_minus_neg"] for _ in range(3)]
    assert all(torch.isfinite(torch.tensor(gaps)))


def test_infer_uses_the_runs_posterior_settings_and_starts_from_the_encoder():
    from corpora.batching import frame
    from textebm.config import DecoderConfig, EncoderConfig, LangevinConfig
    lc = LangevinConfig(k1=3, s1=0.1, s1_schedule=[0.5, 0.2], noise1=0.0, init1="encoder")
    m = LatentEBM(PriorConfig(latent_dim=4, hidden=16), DecoderConfig(vocab_size=12, embed=8,
                  hidden=8, latent_dim=4), lc, EncoderConfig(embed=8, hidden=8))
    x = frame([[4, 5, 6], [7, 8]])
    with torch.no_grad():
        guess = m.posterior.code(x)
    z_start, _ = m.infer(x, steps=0)
    assert torch.equal(z_start, guess)              # the chain starts at the amortized guess
    a, _ = m.infer(x, generator=torch.Generator().manual_seed(0))
    b, _ = m.infer(x, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)                        # noise1 = 0: deterministic
    c, _ = m.infer(x, step_size=0.1)                # another step size: another end point
    assert not torch.allclose(a, c)
    assert m.infer(x, z0=torch.zeros(2, 4), steps=0)[0].abs().sum() == 0  # warm start is used


def test_reading_chain_is_its_own_schedule_and_noise_and_the_api_reads_with_it():
    """read_schedule/read_noise1 set the chain that `infer(read=True)` and TextEBM.infer run (the
    same K1 steps from the same start, computed here by `langevin` directly); training keeps the
    noisy training chain; a config without them (older runs) reads with the training chain."""
    from corpora.vocab import Vocab
    from textebm.api import TextEBM
    from textebm.config import EncoderConfig
    from textebm.langevin import langevin
    lc = LangevinConfig(k1=3, s1_schedule=[0.5, 0.2], noise1=0.5, init1="encoder",
                        read_schedule=[0.3, 0.1], read_noise1=0.0)
    torch.manual_seed(0)
    m = LatentEBM(PriorConfig(latent_dim=4, hidden=16), DecoderConfig(vocab_size=12, embed=8,
                  hidden=8, latent_dim=4, dropout=0.0), lc, EncoderConfig(embed=8, hidden=8)).eval()
    x = frame([[4, 5, 6], [7, 8]])
    with torch.no_grad():
        start = m.posterior.code(x)
    want, _ = langevin(lambda z: m.posterior_energy(z, x), start, 3, [0.3, 0.1], noise=0.0)
    read_a, _ = m.infer(x, read=True, generator=torch.Generator().manual_seed(0))
    read_b, _ = m.infer(x, read=True, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(read_a, want, atol=1e-6) and torch.equal(read_a, read_b)
    train_a, _ = m.infer(x, generator=torch.Generator().manual_seed(0))
    train_b, _ = m.infer(x, generator=torch.Generator().manual_seed(1))
    assert not torch.allclose(train_a, train_b)      # the training chain keeps its noise
    vocab = Vocab.build([["w%d" % i for i in range(8)]])
    api_z = TextEBM(m, vocab, RunConfig(langevin=lc)).infer([vocab.itos[4:7], vocab.itos[7:9]], seed=5)
    assert torch.allclose(api_z, want, atol=1e-6)
    lc.read_schedule, lc.read_noise1 = [], None      # an older run's config
    old, _ = m.infer(x, read=True, generator=torch.Generator().manual_seed(0))
    assert torch.equal(old, train_a)


def test_prior_sample_noise_scale():
    # EBM: noise 0 is gradient descent on U0 = E(z) + |z|^2/2 from the same z0 (by hand here).
    m = tiny_model().eval()
    z, _ = m.sample_prior(6, generator=torch.Generator().manual_seed(1), noise=0.0)
    ref = torch.randn(6, 4, generator=torch.Generator().manual_seed(1))
    for _ in range(10):
        ref = ref.requires_grad_(True)
        (g,) = torch.autograd.grad((m.energy(ref) + 0.5 * ref.pow(2).sum(1)).sum(), ref)
        ref = (ref - 0.5 * 0.4 ** 2 * g).detach()
    torch.testing.assert_close(z, ref)
    # The training chain keeps noise0 whatever sample_noise0 says.
    m.langevin_cfg.sample_noise0 = 0.0
    a, _ = m.sample_prior(6, generator=torch.Generator().manual_seed(1))
    assert not torch.allclose(a, z)
    # Fixed N(0, I) prior: noise c samples N(0, c^2 I) exactly, the chain's stationary law.
    g = tiny_model("gaussian").eval()
    one, _ = g.sample_prior(500, generator=torch.Generator().manual_seed(2))
    half, _ = g.sample_prior(500, generator=torch.Generator().manual_seed(2), noise=0.5)
    torch.testing.assert_close(half, 0.5 * one)


def test_encoder_guess_ignores_padding_and_batch_mates():
    from textebm.config import EncoderConfig
    from textebm.encoder import AmortizedInit
    torch.manual_seed(0)
    enc = AmortizedInit(EncoderConfig(embed=6, hidden=5), vocab_size=12, latent_dim=4).double()
    together = enc(frame(SENTS))
    alone = torch.cat([enc(frame([s])) for s in SENTS])
    torch.testing.assert_close(together, alone)


def test_word_dropout_hides_input_words_in_training_only():
    # In training a share p of the input words (not <s>, not padding) is read as <unk>; in eval
    # mode (posterior chains, validation, NLL) the decoder reads every word, as without it.
    from corpora.vocab import BOS_ID, PAD_ID, UNK_ID
    from textebm.decoder import LSTMDecoder
    torch.manual_seed(0)
    cfg = DecoderConfig(vocab_size=50, embed=8, hidden=16, latent_dim=4, dropout=0.0, word_dropout=0.4)
    dec = LSTMDecoder(cfg)
    plain = LSTMDecoder(DecoderConfig(vocab_size=50, embed=8, hidden=16, latent_dim=4, dropout=0.0))
    plain.load_state_dict(dec.state_dict())
    x = frame([[4 + (i * 7 + j) % 40 for j in range(5 + i % 20)] for i in range(400)])
    z = torch.randn(400, 4)
    seen = []
    dec.embed.register_forward_hook(lambda m, inp, out: seen.append(inp[0].clone()))
    dec.eval()
    assert torch.equal(dec.log_prob(x, z), plain.log_prob(x, z))
    dec.train()
    trained = dec.log_prob(x, z)
    inp = seen[-1]
    words = (x[:, :-1] != PAD_ID)
    words[:, 0] = False
    hidden = (inp == UNK_ID) & words
    assert abs(hidden.sum().item() / words.sum().item() - 0.4) < 0.03
    assert torch.equal(inp[~hidden], x[:, :-1][~hidden])       # the rest untouched
    assert (inp[:, 0] == BOS_ID).all() and not torch.allclose(trained, plain.log_prob(x, z))


@pytest.mark.parametrize("chains,updates", [(0, 1), (7, 1), (7, 2)])
def test_prior_chains_sets_the_number_of_negatives_of_each_ebm_update(chains, updates):
    """train.prior_chains = n: every EBM update draws n prior chains (0: one per sentence), and the
    logged E(z-) is the mean energy over exactly those chains."""
    m = tiny_model()
    cfg = RunConfig()
    cfg.langevin = m.langevin_cfg
    cfg.train.prior_chains, cfg.train.prior_updates = chains, updates
    before = copy.deepcopy(m)
    drawn, sample_prior = [], m.sample_prior

    def recording(n, *args, **kw):
        z, info = sample_prior(n, *args, **kw)
        drawn.append(z.detach().clone())
        return z, info
    m.sample_prior = recording
    logs, _ = train_step(m, frame(SENTS), make_optimizers(m, cfg), cfg)
    n = chains or len(SENTS)
    assert [len(z) for z in drawn] == [n] * updates
    assert logs["e_neg"] == pytest.approx(before.energy(drawn[0]).mean().item(), rel=1e-5)


def fitted_base_model(d=4, seed=0):
    torch.manual_seed(seed)
    m = LatentEBM(PriorConfig(latent_dim=d, hidden=16, base="fitted"),
                  DecoderConfig(vocab_size=12, embed=8, hidden=10, latent_dim=d, dropout=0.0),
                  LangevinConfig(k0=200, s0=0.4, k1=5, s1=0.1, init1="noise")).double()
    mean = torch.tensor([2.0, -1.0, 0.5, 3.0], dtype=torch.float64)[:d]
    a = torch.randn(d, d, dtype=torch.float64)
    cov = a @ a.T / d + 0.2 * torch.eye(d, dtype=torch.float64)
    codes = torch.distributions.MultivariateNormal(mean, cov)
    for _ in range(3000):  # the moving moments of many batches of codes
        m.prior.observe(codes.sample((64,)))
    return m, mean, cov


def test_fitted_base_follows_the_codes_and_normalises_the_prior():
    m, mean, cov = fitted_base_model()
    assert torch.allclose(m.prior.base_mean, mean, atol=0.15)
    assert torch.allclose(m.prior.base_chol @ m.prior.base_chol.T, cov, atol=0.25)
    # With a flat tilt the prior is N(mu, L L^T) itself: U0 is its -log density (up to the
    # (2 pi)^(d/2) every prior energy leaves out), so log_joint needs no other constant.
    with torch.no_grad():
        m.prior.net[-1].weight.zero_()
        m.prior.net[-1].bias.zero_()
        z = torch.randn(50, 4, dtype=torch.float64) * 3
        base = torch.distributions.MultivariateNormal(m.prior.base_mean, scale_tril=m.prior.base_chol)
        assert torch.allclose(-m.prior_energy(z) - 2 * torch.log(torch.tensor(2 * torch.pi)),
                              base.log_prob(z), atol=1e-9)
        assert torch.allclose(m.to_u(m.to_z(z)), z, atol=1e-9)


def test_fitted_base_chain_samples_the_base_and_log_z_of_a_flat_tilt_is_zero():
    from textebm.ais import AISConfig
    from textebm.nll import partition
    m, _, _ = fitted_base_model()
    with torch.no_grad():
        m.prior.net[-1].weight.zero_()
        m.prior.net[-1].bias.zero_()
    gen = torch.Generator().manual_seed(0)
    z, _ = m.sample_prior(4000, generator=gen, noise=1.0)
    # The chain runs on whitened coordinates, so its samples take the base's mean and
    # covariance (Langevin at s = 0.4 on N(0, I) settles at variance 1 / (1 - s^2/4) = 1.04).
    assert torch.allclose(z.mean(0), m.prior.base_mean, atol=0.1)
    cov = torch.cov(z.T)
    assert torch.allclose(cov, 1.04 * m.prior.base_chol @ m.prior.base_chol.T, atol=0.15 * cov.diagonal().max())
    r = partition(m, AISConfig(temperatures=20, runs=2, chains=50, pilot_chains=20), 1000)
    assert r["log_z"] == pytest.approx(0.0, abs=1e-9) and r["plain_mc"]["log_z"] == pytest.approx(0.0, abs=1e-9)
