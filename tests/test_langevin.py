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
