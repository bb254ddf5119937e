"""Importance-weighted NLL against an exact marginal (1-D latent, quadrature) and log Z."""
import math

import pytest
import torch

from corpora.batching import frame
from textebm.nll import NLLConfig, importance_nll, log_partition
from textebm.config import DecoderConfig, LangevinConfig, PriorConfig
from textebm.model import LatentEBM

SENTS = [[4, 5], [6], [7, 4, 5, 6], [5, 5, 5]]


def model_1d(kind="ebm"):
    torch.manual_seed(0)
    m = LatentEBM(PriorConfig(latent_dim=1, hidden=8, kind=kind),
                  DecoderConfig(vocab_size=8, embed=4, hidden=6, latent_dim=1, dropout=0.0),
                  LangevinConfig(k0=20, s0=0.4, k1=30, s1=0.2)).double()
    with torch.no_grad():
        if m.prior is not None:  # a clearly non-Gaussian prior: bimodal tilt
            m.prior.net[-1].weight.mul_(4.0)
        m.decoder.z_to_h.weight.mul_(20.0)  # make p(x|z) depend strongly on z
    return m.eval()


def exact_log_marginals(m, sents):
    grid = torch.linspace(-9, 9, 6001, dtype=torch.float64).unsqueeze(1)
    dz = (grid[1] - grid[0]).item()
    with torch.no_grad():
        log_prior_u = -m.prior_energy(grid) - 0.5 * math.log(2 * math.pi)   # f + log N
        log_z = torch.logsumexp(log_prior_u, 0) + math.log(dz)
        out = []
        for s in sents:
            x = frame([s]).expand(grid.size(0), -1)
            lp = m.decoder.log_prob(x, grid)
            out.append((torch.logsumexp(log_prior_u + lp, 0) + math.log(dz) - log_z).item())
    return torch.tensor(out), log_z.item()


def test_log_partition_matches_quadrature():
    m = model_1d()
    _, exact = exact_log_marginals(m, [])
    est, se = log_partition(m, n=200_000, seed=1)
    assert abs(exact) > 0.05             # the tilt is not trivial
    assert abs(est - exact) < 4 * se + 1e-3, (est, exact, se)
    assert log_partition(model_1d("gaussian")) == (0.0, 0.0)


def test_importance_nll_matches_exact_marginal():
    m = model_1d()
    exact, _ = exact_log_marginals(m, SENTS)
    res = importance_nll(m, SENTS, NLLConfig(chains=16, samples=2000, logz_samples=200_000, seed=3))
    exact_nll = -exact.mean().item()
    assert abs(res["nll"] - exact_nll) < 0.03, (res["nll"], exact_nll)
    tokens = sum(len(s) + 1 for s in SENTS)
    assert res["tokens"] == tokens
    assert math.isclose(res["ppl"], math.exp(res["nll"] * len(SENTS) / tokens), rel_tol=1e-9)


def test_importance_nll_gaussian_prior_matches_exact_marginal():
    m = model_1d("gaussian")
    exact, _ = exact_log_marginals(m, SENTS)
    res = importance_nll(m, SENTS, NLLConfig(chains=16, samples=2000, seed=4))
    assert abs(res["nll"] + exact.mean().item()) < 0.03


def test_standard_errors_cover_the_exact_marginal():
    # The estimator's own error bar must cover the quadrature answer (with the spread a few
    # importance samples leave), and the over-sentences error is the plain std / sqrt(n).
    m = model_1d()
    exact, _ = exact_log_marginals(m, SENTS)
    res = importance_nll(m, SENTS, NLLConfig(chains=16, samples=200, seed=5))
    assert 0 < res["nll_mc_se"] < 0.2
    assert abs(res["nll"] + exact.mean().item()) < 4 * res["nll_mc_se"] + 0.01
    assert res["nll_se"] == pytest.approx((-exact).std().item() / 2, rel=0.05)


def test_interrupted_nll_resumes_to_the_same_numbers(tmp_path):
    # The progress file holds each finished batch and the generator's state: a run stopped after
    # two batches and rerun ends with exactly the numbers of a run never stopped, and the file is
    # gone afterwards. A file made for other settings is not resumed from.
    m = model_1d()
    sents = [[4 + i % 4] * (1 + i % 5) for i in range(11)]
    cfg = NLLConfig(chains=4, samples=16, logz_samples=2000, batch_size=3, seed=7)
    whole = importance_nll(m, sents, cfg)
    state = tmp_path / "nll.progress.pt"
    seen = []

    def stop_after_two(n):
        seen.append(n)
        if len(seen) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        importance_nll(m, sents, cfg, progress=stop_after_two, state_path=state)
    assert state.exists()
    rest = []
    resumed = importance_nll(m, sents, cfg, progress=rest.append, state_path=state)
    assert sum(rest) == len(sents) - sum(seen)     # only the unfinished batches ran
    assert resumed == whole and not state.exists()
    seen.clear()
    with pytest.raises(KeyboardInterrupt):
        importance_nll(m, sents, cfg, progress=stop_after_two, state_path=state)
    other = NLLConfig(chains=4, samples=16, logz_samples=2000, batch_size=3, seed=8)
    rest.clear()
    assert importance_nll(m, sents, other, progress=rest.append, state_path=state) == \
        importance_nll(m, sents, other) and sum(rest) == len(sents)
