"""Latent diagnostics: checked against known answers and against the demo grammar itself."""
import math

import numpy as np
import pytest
import torch

from corpora import demo
from corpora.vocab import Vocab
from textebm.config import DecoderConfig, LangevinConfig, PriorConfig
from pipeline.demo_checks import _probe_accuracy, grammar_checks
from textebm.diagnostics import active_units, latent_use, mutual_information, posterior_chains
from textebm.model import LatentEBM
from textebm.posterior import build_posterior


def test_mutual_information_spans_zero_to_log_n_and_matches_a_closed_form():
    gen = torch.Generator().manual_seed(0)
    n = 50
    # Far-apart, tight posteriors: each z names its sentence, I(x; z) = log N.
    centres = 100 * torch.randn(n, 1, 4, generator=gen)
    tight = centres + 0.01 * torch.randn(n, 6, 4, generator=gen)
    assert mutual_information(tight) == pytest.approx(math.log(n), abs=1e-3)
    # Every sentence with the same posterior: z says nothing about x, exactly.
    same = torch.randn(1, 6, 4, generator=gen).expand(n, 6, 4)
    assert abs(mutual_information(same.contiguous())) < 1e-9
    # Posterior means mu_x ~ N(0, 3 I), z | x ~ N(mu_x, I) in 2-D: I = (D/2) log(1 + 3) for many
    # sentences (3,000 here, log N = 8.0 far above it).
    mu = math.sqrt(3) * torch.randn(3000, 1, 2, generator=gen)
    z = mu + torch.randn(3000, 6, 2, generator=gen)
    assert mutual_information(z) == pytest.approx(math.log(4), abs=0.05)
    # Never below 0 nor above log N, whatever the chains look like (each term is log N minus an
    # entropy over N sentences): a posterior far wider than its chains showed, heavy tails.
    wide = tight.clone()
    wide[:, -1] += 50 * torch.randn(n, 4, generator=gen)
    torch.manual_seed(1)
    heavy = torch.distributions.StudentT(1.0).sample((n, 6, 4))
    for zz in (wide, heavy):
        assert 0.0 <= mutual_information(zz) <= math.log(n)


def test_chains_that_only_scatter_carry_no_information_and_no_active_units():
    """A collapsed model's chains scatter around one shared posterior N(0, I): with 4 chains in
    32 dimensions a fit-and-score-the-same-points estimate would report ~4 nats and every unit
    active; held-out scoring and the within-chain correction report ~0."""
    gen = torch.Generator().manual_seed(0)
    scatter = torch.randn(300, 6, 32, generator=gen)
    assert 0 <= mutual_information(scatter) < 0.5
    assert active_units(scatter) == 0
    # One dimension whose posterior mean does vary with x (variance 1): exactly one active unit.
    shifted = scatter.clone()
    shifted[:, :, 0] += torch.randn(300, 1, generator=gen)
    assert active_units(shifted) == 1


def test_grammar_checks_score_samples_against_the_grammar():
    real = [t for _, t in demo.generate(400, seed=3)]
    ok = grammar_checks(real)
    assert ok["impossible_share"] == 0.0
    # Fresh grammar samples have the grammar's entropy rate, within their standard errors.
    diff = ok["samples_exact_nll_tok"] - ok["data_exact_nll_tok"]
    assert abs(diff) < 4 * math.hypot(ok["samples_exact_nll_tok_se"], ok["data_exact_nll_tok_se"])
    assert ok["samples_vs_data"] == pytest.approx(diff / ok["data_exact_nll_tok"], rel=1e-12)
    valid_nll, valid_tokens = demo.true_nll(demo.splits()["valid"])
    assert ok["valid_exact_nll_tok"] == pytest.approx(valid_nll / valid_tokens, rel=1e-12)
    rng = np.random.default_rng(0)
    shuffled = [list(rng.permutation(s)) for s in real]
    bad = grammar_checks(shuffled)
    assert bad["impossible_share"] > 0.8
    assert grammar_checks(real[:100] + [["chef", "the", "."]] * 100)["impossible_share"] == 0.5


def test_topic_probe_reads_topics_from_z_and_not_from_noise():
    gen = torch.Generator().manual_seed(0)
    y = np.arange(800) % 4
    informative = torch.nn.functional.one_hot(torch.as_tensor(y), 4).double() \
        + 0.3 * torch.randn(800, 4, generator=gen).double()
    noise = torch.randn(800, 8, generator=gen).double()
    assert _probe_accuracy(informative[:600], y[:600], informative[600:], y[600:], 4) > 0.95
    assert _probe_accuracy(noise[:600], y[:600], noise[600:], y[600:], 4) < 0.4


def test_a_decoder_that_ignores_z_has_zero_gap():
    vocab = Vocab.build([t for _, t in demo.generate(200, seed=1)])
    m = LatentEBM(PriorConfig(latent_dim=4, hidden=16), DecoderConfig(
        vocab_size=len(vocab), embed=8, hidden=16, latent_dim=4, dropout=0.0), LangevinConfig(k1=5))
    with torch.no_grad():                       # cut every path from z into the decoder
        m.decoder.lstm.weight_ih_l0[:, 8:] = 0
        m.decoder.z_to_h.weight.zero_()
    ids = [vocab.encode(t) for _, t in demo.generate(40, seed=2)]
    d = latent_use(m, ids, seed=0, chains=3, gap_steps=5)
    assert d["gap_nats_tok"] == pytest.approx(0.0, abs=1e-6)
    z = posterior_chains(m, ids, 3, seed=0)
    assert z.shape == (40, 3, 4) and d["mutual_info"] < 0.5 * math.log(40)


def test_topic_probe_readings_line_up_sentence_by_sentence():
    # With a noiseless posterior chain from the amortized start every chain of a sentence ends in
    # the same z: no scatter, and the posterior-mean probe reads exactly what one chain's does
    # (which fails if the chains were averaged across sentences or out of order).
    from pipeline.demo_checks import topic_probes
    vocab = Vocab.build([t for _, t in demo.generate(300, seed=1)])
    torch.manual_seed(0)
    m = LatentEBM(PriorConfig(latent_dim=4, hidden=16), DecoderConfig(
        vocab_size=len(vocab), embed=8, hidden=16, latent_dim=4, dropout=0.0),
        LangevinConfig(k1=3, noise1=0.0, init1="encoder"))
    with torch.no_grad():
        m.decoder.z_to_h.weight.mul_(30.0)  # a decoder that reads z, so the chain moves
    r = topic_probes(m, vocab, seed=0, probe_sentences=(300, 200), chains=3)
    assert r["z_within_var"] < 1e-12 < r["z_between_var"]
    assert r["topic_probe_mean_acc"] == r["topic_probe_acc"]
    assert r["topic_probe_init_acc"] is not None and 0 <= r["topic_probe_init_acc"] <= 1
    m.langevin_cfg.init1 = "noise"   # the same model read with a posterior that has no g(x)
    m.posterior = build_posterior(m.langevin_cfg, None, len(vocab), 4)
    r = topic_probes(m, vocab, seed=0, probe_sentences=(300, 200), chains=3)
    assert r["topic_probe_init_acc"] is None and r["z_within_var"] > 1e-3


def test_posterior_decodes_decode_from_posterior_z_and_score_against_the_grammar(monkeypatch):
    """A decoder that returns the very sentence whose posterior z it is given (looked up by z) has
    no impossible output and the fresh sentences' exact NLL/token; a decoder that ignores z and
    emits one broken sentence is impossible every time."""
    from corpora.batching import frame
    from pipeline.demo_checks import posterior_decodes
    fresh = [t for _, t in demo.generate(40, seed=20_000)]
    vocab = Vocab.build(fresh)
    torch.manual_seed(0)
    m = LatentEBM(PriorConfig(latent_dim=4, hidden=8), DecoderConfig(vocab_size=len(vocab), embed=8,
                  hidden=8, latent_dim=4, dropout=0.0), LangevinConfig(k1=2))
    ids = [vocab.encode(t) for t in fresh]
    z_post = posterior_chains(m, ids, 1, 2).squeeze(1)
    table = frame(ids)

    def by_z(z, max_len, generator):  # the sentence whose posterior z this is
        return table[torch.cdist(z, z_post).argmin(1)]
    monkeypatch.setattr(m.decoder, "generate", by_z)
    got = posterior_decodes(m, vocab, seed=0, n=40)
    nll, tokens = demo.true_nll(fresh)
    assert got["posterior_impossible_share"] == 0.0
    assert got["posterior_samples_exact_nll_tok"] == pytest.approx(nll / tokens, rel=1e-9)
    broken = frame([vocab.encode(["chef", "the", "."])])
    monkeypatch.setattr(m.decoder, "generate", lambda z, max_len, generator: broken.expand(z.size(0), -1))
    assert posterior_decodes(m, vocab, seed=0, n=40)["posterior_impossible_share"] == 1.0


def test_fano_bound_reads_log_k_for_a_perfect_probe_and_zero_at_chance():
    from pipeline.demo_checks import fano_information
    assert fano_information(1.0, 4) == pytest.approx(math.log(4))
    assert fano_information(0.25, 4) == pytest.approx(0.0, abs=1e-12)
    # 98% on 4 topics: log 4 - h(0.02) - 0.02 log 3.
    h = -(0.02 * math.log(0.02) + 0.98 * math.log(0.98))
    assert fano_information(0.98, 4) == pytest.approx(math.log(4) - h - 0.02 * math.log(3))
