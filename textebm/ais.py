"""Annealed importance sampling (Neal 2001): log Z(alpha) of the prior, and log p(x).

For a start density p_init (normalised, easy to sample) and an unnormalised target exp(-U(z)),

    U_b = (1 - b) U_init + b U,   b: 0 = b_0 < b_1 < ... < b_T = 1 (a sigmoid schedule),
    z_0 ~ p_init;  log w += (b_t - b_{t-1}) (U_init(z) - U(z));  then one MALA step on U_b,

and Ẑ = mean_i w_i is unbiased for Z = ∫ exp(-U) for any T; more temperatures lower the variance
of w. MALA (textebm.langevin) leaves each U_b invariant; its step size per temperature is tuned by
a pilot pass (to an acceptance rate of 0.65) and then frozen, so the reported chains are
independent and each transition is exact. Chains come in groups (one per target: one for log Z,
one per sentence for log p(x)), each with its own step sizes.

  - `ais_log_z`: log Z(alpha) = log ∫ exp(-E(z)) N(z; 0, I) dz, from p_init = N(0, I), in several
    independent runs whose spread is reported.
  - `plain_mc_log_z`: log mean exp(-E) over draws from N(0, I). Unbiased for Z, but a learned E
    puts its mass where N(0, I) rarely goes, and then the mean is one or two draws: kept as a
    diagnostic (the two agree only where the prior has no wells that N(0, I) misses).
Both report the effective sample size of their weights, (sum w)^2 / sum w^2. log Ẑ is a
stochastic lower bound (E log Ẑ <= log Z, Jensen): an estimate still climbing with more
temperatures, or runs that disagree, say it has not converged (bench/partition.py).
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Callable

import torch

from textebm.langevin import accept, energy_and_grad, propose

LOG_2PI = math.log(2 * math.pi)
Fn = Callable[[torch.Tensor], torch.Tensor]   # z: (G, n, D) -> (G, n)


@dataclass
class AISConfig:
    temperatures: int = 40000  # intermediate distributions between N(0, I) and p_alpha; 10,000
                               # read 0.39 nats low on a demo run (bench/results/logz_sensitivity.jsonl)
    chains: int = 500          # chains per run
    runs: int = 3              # independent runs (their spread is reported)
    pilot_chains: int = 100    # chains of the pilot pass that tunes the step sizes (not reported)
    step_size: float = 0.5     # the pilot's first MALA step size s; adapted from there
    target_accept: float = 0.65
    schedule_sharpness: float = 4.0  # delta of the sigmoid schedule (Grosse et al. 2015)
    seed: int = 0


def sigmoid_schedule(temperatures: int, sharpness: float = 4.0) -> torch.Tensor:
    """b_0 = 0 < b_1 < ... < b_T = 1, dense at both ends: (T + 1,) float64."""
    t = torch.linspace(-sharpness, sharpness, temperatures + 1, dtype=torch.float64)
    s = torch.sigmoid(t)
    return (s - s[0]) / (s[-1] - s[0])


def anneal(u_init: Fn, u_target: Fn, z: torch.Tensor, betas: torch.Tensor,
           steps: torch.Tensor | None, generator: torch.Generator, step_size: float = 0.5,
           target_accept: float = 0.65) -> tuple[torch.Tensor, torch.Tensor, float]:
    """AIS chains z: (G, n, D), drawn from p_init ∝ exp(-u_init) (normalised), to exp(-u_target).
    `steps`: (G, T) frozen step sizes, or None to tune them as the chains go (the pilot).
    Returns log weights (G, n) float64, the step sizes used (G, T) float64 on the CPU, the mean
    acceptance.

    The step sizes and the acceptance tally stay on z's device until the end: nothing per
    temperature is read back by the host (on a GPU each read would stall the loop, 2 per
    temperature: 160,000 for a 40,000-temperature log Z), and the arithmetic is the same as
    tallying on the host."""
    G, n, D = z.shape
    T = len(betas) - 1
    bs = betas.tolist()   # Python floats, as float(betas[t]) gives them

    def parts(v):  # u_init, u_target and their gradients at v: (G, n, D)
        ui, gi = energy_and_grad(lambda x: u_init(x.view(G, n, D)).reshape(-1), v.reshape(-1, D))
        ut, gt = energy_and_grad(lambda x: u_target(x.view(G, n, D)).reshape(-1), v.reshape(-1, D))
        return ui.view(G, n), gi.view(G, n, D), ut.view(G, n), gt.view(G, n, D)

    ui, gi, ut, gt = parts(z)
    log_w = torch.zeros(G, n, dtype=torch.float64, device=z.device)
    used = torch.empty(G, T, dtype=torch.float64, device=z.device)
    s = torch.full((G, 1, 1), step_size, dtype=z.dtype, device=z.device)
    frozen = None if steps is None else steps.to(device=z.device, dtype=z.dtype)   # (G, T)
    accepted = torch.zeros((), dtype=torch.float64, device=z.device)
    for t in range(1, T + 1):
        b, b_prev = bs[t], bs[t - 1]
        log_w += (b - b_prev) * (ui - ut).double()        # pi_b / pi_b' at the current state
        if frozen is not None:
            s = frozen[:, t - 1].view(G, 1, 1)
        used[:, t - 1] = s.view(G)
        u, g = (1 - b) * ui + b * ut, (1 - b) * gi + b * gt
        prop = propose(z, g, s, generator)
        pi, pgi, pt, pgt = parts(prop)
        ok = accept(z.reshape(-1, D), prop.reshape(-1, D), u.reshape(-1), ((1 - b) * pi + b * pt).reshape(-1),
                    g.reshape(-1, D), ((1 - b) * pgi + b * pgt).reshape(-1, D),
                    s.expand(G, n, 1).reshape(-1, 1), generator).view(G, n)
        keep = ok.unsqueeze(-1)
        z = torch.where(keep, prop, z)
        ui, ut = torch.where(ok, pi, ui), torch.where(ok, pt, ut)
        gi, gt = torch.where(keep, pgi, gi), torch.where(keep, pgt, gt)
        rate = ok.to(z.dtype).mean(1)                                   # (G,)
        accepted += rate.mean().double()     # float64 adds, as a Python float sum of .item()s
        if steps is None:  # Robbins-Monro on log s towards the target acceptance
            s = s * torch.exp(0.5 * (rate - target_accept)).view(G, 1, 1)
    return log_w, used.cpu(), accepted.item() / max(T, 1)


def ess(log_w: torch.Tensor) -> torch.Tensor:
    """Effective sample size (sum w)^2 / sum w^2 of importance weights given as logs, over the
    last dim."""
    lw = log_w.double()
    return torch.exp(2 * torch.logsumexp(lw, -1) - torch.logsumexp(2 * lw, -1))


def gaussian_u(z: torch.Tensor) -> torch.Tensor:
    """-log N(z; 0, I): (..., D) -> (...)."""
    return 0.5 * z.pow(2).sum(-1) + 0.5 * z.size(-1) * LOG_2PI


def ais_log_z(energy: Callable[[torch.Tensor], torch.Tensor], dim: int,
              cfg: AISConfig = AISConfig(), device="cpu", dtype: torch.dtype = torch.float32) -> dict:
    """log Z of exp(-E(z)) N(z; 0, I) by AIS from N(0, I). energy: (B, dim) -> (B,).

    Returns {log_z (all runs' chains pooled), per_run (each run's estimate), spread (max - min over
    runs), std (over runs), ess (each run's effective sample size of its chains' weights),
    accept (mean MALA acceptance), steps (the tuned step sizes at b = 0, 1/2, 1), the settings,
    seconds}."""
    start = time.time()
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    betas = sigmoid_schedule(cfg.temperatures, cfg.schedule_sharpness)

    def u_target(z):
        return energy(z.reshape(-1, dim)).view(z.shape[:-1]) + gaussian_u(z)

    def draw(n):
        return torch.randn(1, n, dim, generator=gen, device=device, dtype=dtype)

    _, steps, _ = anneal(gaussian_u, u_target, draw(cfg.pilot_chains), betas, None, gen,
                         cfg.step_size, cfg.target_accept)
    # The runs share the frozen schedule, so they run as one batch of independent chains.
    log_w, _, acc = anneal(gaussian_u, u_target, draw(cfg.runs * cfg.chains), betas, steps, gen)
    per_run = log_w.view(cfg.runs, cfg.chains)
    runs = (torch.logsumexp(per_run, 1) - math.log(cfg.chains)).tolist()
    mid = steps[0, steps.size(1) // 2].item()
    return {"log_z": float(torch.logsumexp(log_w.view(-1), 0) - math.log(log_w.numel())),
            "per_run": runs, "spread": max(runs) - min(runs),
            "std": float(torch.tensor(runs).std()) if len(runs) > 1 else math.nan,
            "ess": ess(per_run).tolist(), "accept": acc,
            "steps": {"b0": steps[0, 0].item(), "b_half": mid, "b1": steps[0, -1].item()},
            "estimator": "ais", **asdict(cfg), "seconds": round(time.time() - start, 2)}


def plain_mc_log_z(energy: Callable[[torch.Tensor], torch.Tensor], dim: int, n: int = 200_000,
                   seed: int = 0, device="cpu", dtype: torch.dtype = torch.float32,
                   chunk: int = 50_000) -> dict:
    """log Z = log mean_i exp(-E(z_i)), z_i ~ N(0, I). Returns {log_z, ess, se (the delta-method
    standard error, meaningless when ess is a few draws), draws}."""
    gen = torch.Generator(device=device).manual_seed(seed)
    fs = []
    with torch.no_grad():
        for i in range(0, n, chunk):
            z = torch.randn(min(chunk, n - i), dim, generator=gen, device=device, dtype=dtype)
            fs.append(-energy(z).double())
    f = torch.cat(fs)
    w = torch.exp(f - f.max())
    return {"log_z": float(torch.logsumexp(f, 0) - math.log(n)), "ess": float(ess(f)),
            "se": float(w.std() / math.sqrt(n) / w.mean()), "draws": n, "estimator": "plain_mc"}
