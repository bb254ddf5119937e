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
