"""Short-run Langevin: the update rule against analytic targets, and chain independence."""
import math

import torch

from textebm.langevin import init_z, langevin


def test_quadratic_target_mean_and_covariance():
    # U(z) = (z - mu)^T P (z - mu) / 2: a Gaussian with mean mu and covariance P^-1.
    torch.manual_seed(0)
    mu = torch.tensor([1.0, -2.0])
    cov = torch.tensor([[1.0, 0.6], [0.6, 0.5]])
    prec = torch.linalg.inv(cov)

    def energy(z):
        d = z - mu
        return 0.5 * ((d @ prec) * d).sum(-1)

    z, _ = langevin(energy, init_z(20000, 2), steps=600, step_size=0.15)
    emp_cov = torch.cov(z.T)
    assert torch.allclose(z.mean(0), mu, atol=0.05)
    # Langevin with a finite step is biased by O(s^2); s = 0.15 keeps it within a few percent.
    assert torch.allclose(emp_cov, cov, atol=0.06), emp_cov


def test_mixture_target_mode_weights():
    # Two wells at -2 and +2 with depths differing by log 3: weights 3:1 in favour of +2.
    torch.manual_seed(1)

    def energy(z):
        a = -0.5 * ((z - 2) ** 2).sum(-1) / 0.25 + math.log(3)
        b = -0.5 * ((z + 2) ** 2).sum(-1) / 0.25
        return -torch.logsumexp(torch.stack([a, b]), 0)

    z0 = torch.where(torch.rand(20000, 1) < 0.5, -2.0, 2.0) + 0.5 * torch.randn(20000, 1)
    # Start at the modes with even weights; too few steps to cross the barrier, so instead check
    # that the within-mode spread is right (sd 0.5) — mixing across modes is not short-run's job.
    z, _ = langevin(energy, z0, steps=300, step_size=0.1)
    right = z[z > 0]
    assert abs(right.std().item() - 0.5) < 0.03
    assert abs(right.mean().item() - 2.0) < 0.03


def test_step_rule_is_s_squared_over_two():
    # One noiseless step on U = |z|^2/2 moves z by -(s^2/2) z; noise has sd s.
    torch.manual_seed(0)
    z0 = torch.full((100000, 1), 1.0)
    z, _ = langevin(lambda z: 0.5 * z.pow(2).sum(-1), z0, steps=1, step_size=0.4)
    assert abs(z.mean().item() - (1 - 0.08)) < 0.01
    assert abs(z.std().item() - 0.4) < 0.01


def test_trace_records_energies_and_states():
    gen = torch.Generator().manual_seed(3)
    z0 = init_z(5, 3, generator=gen)
    z, info = langevin(lambda z: 0.5 * z.pow(2).sum(-1), z0, 10, 0.1, trace=True, trace_at=(0, 4, 10))
    assert info["energies"].shape == (11, 5)
    assert torch.equal(info["z_at"][0], z0)
    assert torch.equal(info["z_at"][10], z)
    assert torch.allclose(info["energies"][0], 0.5 * z0.pow(2).sum(-1))


def test_noise_scale_zero_is_a_deterministic_chain():
    u = lambda z: 0.5 * (z - 1.0).pow(2).sum(-1)
    z0 = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    a, _ = langevin(u, z0, 30, 0.5, torch.Generator().manual_seed(1), noise=0.0)
    b, _ = langevin(u, z0, 30, 0.5, torch.Generator().manual_seed(2), noise=0.0)
    assert torch.equal(a, b)
    # Gradient descent on a quadratic: z_k - 1 = (1 - s^2/2)^k (z_0 - 1) exactly.
    torch.testing.assert_close(a - 1.0, (1 - 0.125) ** 30 * (z0 - 1.0))


def test_noise_scale_samples_a_colder_target():
    """With noise c on U = ||z||^2/2 the chain's stationary variance is c^2 / (1 - s^2/4):
    the target exp(-U / c^2), up to the discretisation factor."""
    u = lambda z: 0.5 * z.pow(2).sum(-1)
    gen = torch.Generator().manual_seed(0)
    z, _ = langevin(u, torch.zeros(20000, 2), 200, 0.3, gen, noise=0.5)
    expected = 0.25 / (1 - 0.3 ** 2 / 4)
    assert abs(z.var().item() - expected) < 0.03 * expected


def test_step_size_schedule_repeats_its_last_value_and_changes_the_chain():
    from textebm.langevin import step_sizes
    assert step_sizes(5, [0.8, 0.2]) == [0.8, 0.2, 0.2, 0.2, 0.2]
    assert step_sizes(3, 0.1) == [0.1, 0.1, 0.1]
    u = lambda z: 0.5 * (z - 2.0).pow(2).sum(-1)
    z0 = torch.zeros(2, 2)
    # Deterministic chains: a schedule [1.0, 0.1] moves z halfway to 2 at once (1 - 1/2), then
    # slowly (factor 1 - 0.005 per step); the constant 0.1 only slowly.
    a, _ = langevin(u, z0, 3, [1.0, 0.1], noise=0.0)
    b, _ = langevin(u, z0, 3, 0.1, noise=0.0)
    torch.testing.assert_close(a, 2.0 - 2.0 * 0.5 * 0.995 ** 2 * torch.ones(2, 2))
    torch.testing.assert_close(b, 2.0 - 2.0 * 0.995 ** 3 * torch.ones(2, 2))


def _tiny_ebm():
    from textebm.config import DecoderConfig, LangevinConfig, PriorConfig
    from textebm.model import LatentEBM
    torch.manual_seed(0)
    return LatentEBM(PriorConfig(latent_dim=4, hidden=16), DecoderConfig(vocab_size=9, embed=4,
                     hidden=8, latent_dim=4), LangevinConfig(k0=25, s0=0.4))


def test_compiled_prior_chain_follows_the_eager_chain():
    # Same generator, same noise order: the compiled steps give the eager chain's z up to float
    # rounding, with and without noise, and at a second batch size (a recompile).
    import pytest
    m = _tiny_ebm()
    with torch.no_grad():
        m.prior.net[-1].weight.mul_(5.0)  # a prior far from N(0, I), so the gradient matters
    eager = [m.sample_prior(n, generator=torch.Generator().manual_seed(3), noise=c)[0]
             for n, c in ((6, 1.0), (6, 0.0), (11, 0.9))]
    m.prior.compile = True
    compiled = [m.sample_prior(n, generator=torch.Generator().manual_seed(3), noise=c)[0]
                for n, c in ((6, 1.0), (6, 0.0), (11, 0.9))]
    if m.prior._compiled.failed:
        pytest.skip(f"torch.compile unavailable here: {m.prior._compiled.failed}")
    z0 = init_z(6, 4, generator=torch.Generator().manual_seed(3))
    assert (eager[0] - z0).norm() > 1.0  # the chain moved
    for a, b in zip(eager, compiled):
        assert torch.allclose(a, b, atol=1e-5), (a - b).abs().max()
        # z- is a sample, not a function of the weights: no graph back through the chain
        # (the EBM's weights require gradients, as they do in training).
        assert b.grad_fn is None and not b.requires_grad
    # Training updates the EBM's weights in place between chains: the compiled chain reads
    # them as they are now (they are inputs of the graph, not constants baked into it).
    with torch.no_grad():
        m.prior.net[0].weight.mul_(-1.5)
    after = m.sample_prior(6, generator=torch.Generator().manual_seed(3))[0]
    m.prior.compile = False
    want = m.sample_prior(6, generator=torch.Generator().manual_seed(3))[0]
    assert not torch.allclose(want, eager[0], atol=1e-2) and torch.allclose(after, want, atol=1e-5)
    with torch.no_grad():
        m.prior.net[0].weight.div_(-1.5)
    # A traced chain (energy profile) stays eager and is the same chain too.
    traced, info = m.sample_prior(6, generator=torch.Generator().manual_seed(3), trace=True)
    assert info["energies"].shape == (26, 6) and torch.allclose(traced, eager[0], atol=1e-5)


def test_compiled_chain_falls_back_to_the_same_eager_chain(recwarn):
    # A compiler failure part-way through the first chain (after three steps drew their noise)
    # warns and runs the eager chain from the same generator state: exactly the eager result.
    from textebm.langevin import CompiledChain
    m = _tiny_ebm()
    chain = CompiledChain(m.prior_energy)
    calls = []

    def failing(z, s, noise, eps):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("no C++ compiler\nmore detail")
        return z

    chain._step = failing
    z0 = init_z(5, 4, generator=torch.Generator().manual_seed(1))
    got, _ = chain(z0, 25, 0.4, torch.Generator().manual_seed(2))
    want, _ = langevin(m.prior_energy, z0, 25, 0.4, torch.Generator().manual_seed(2))
    assert torch.equal(got, want)
    assert chain.failed == "RuntimeError: no C++ compiler"
    assert any("running eagerly" in str(w.message) for w in recwarn.list)
    again, _ = chain(z0, 25, 0.4, torch.Generator().manual_seed(2))
    assert torch.equal(again, want) and len(calls) == 3  # no second attempt to compile


def test_mala_samples_a_narrow_gaussian_where_the_short_run_chain_is_biased():
    # Target N(mu, 0.3^2 I) in 32 dimensions, far from the start N(0, I). The unadjusted rule at
    # the prior chain's s = 0.4 samples a much wider law (its variance is biased by the step);
    # MALA tunes its step and keeps exp(-U) itself: mean and variance match the target.
    from textebm.langevin import langevin, mala_chain
    gen = torch.Generator().manual_seed(0)
    mu = torch.full((32,), 0.7)

    def energy(z):
        return 0.5 * ((z - mu) / 0.3).pow(2).sum(-1)

    z0 = torch.randn(2000, 32, generator=gen)
    z, info = mala_chain(energy, z0, 400, 0.4, gen)
    assert (z.mean(0) - mu).abs().max() < 0.05
    assert abs(z.var(0).mean().item() / 0.09 - 1) < 0.1
    assert 0.4 < info["accept"] < 0.8
    ula, _ = langevin(energy, z0, 400, 0.4, gen)
    assert ula.var(0).mean().item() / 0.09 > 1.5
