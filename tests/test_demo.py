"""The synthetic demo corpus: its sampler and its exact log-probability must agree."""
from __future__ import annotations

import itertools
import math
import time
from collections import Counter

import numpy as np
import pytest

from corpora import demo

# A tiny grammar whose every string of length <= 6 can be listed. "y" is both a topic-b noun and
# an adverb, so "x run y ." has two derivations that log_prob must add up; lengths are cut to
# 3..5 so the conditioning on the length range is exercised too.
TINY_TOPICS = ("a", "b")
TINY_LEXICON = {"N": {"a": "x", "b": "y"}, "V": {"a": "run", "b": "sit"}, "D": "the",
                "ADV": "y now", ".": "."}
TINY_RULES = {
    "S": [(("NP", "VP", "."), (1, 1))],
    "NP": [(("D", "N"), (.5, .7)), (("N",), (.5, .3))],
    "VP": [(("V",), (.3, .2)), (("V", "ADV"), (.3, .1)), (("V", "NP"), (.4, .7))],
}


@pytest.fixture(scope="module")
def tiny():
    return demo.Grammar(TINY_TOPICS, TINY_LEXICON, TINY_RULES, min_len=3, max_len=5)


@pytest.fixture(scope="module")
def sample():
    return demo.generate(5000, seed=11)


def test_tiny_grammar_probabilities_sum_to_one_over_all_strings(tiny):
    strings = [list(s) for L in range(7) for s in itertools.product(tiny.words, repeat=L)]
    lj = tiny.log_joint(strings)
    assert np.exp(lj).sum() == pytest.approx(1.0, abs=1e-9)
    lens = np.array([len(s) for s in strings])
    assert np.all(np.isneginf(lj[(lens < 3) | (lens > 5)]))


def test_tiny_grammar_sums_over_derivations(tiny):
    # N V ADV . and N V N . both give "x run y .": p(x, a) is the sum of the two paths.
    # Topic a's templates: N V . .15, D N V . .15, N V ADV . .15, D N V ADV . .15, N V N . .1,
    # N V D N . .1, D N V N . .1, D N V D N . .1; the length cut drops the last, so Z_a = 0.9.
    via_adv = 0.15 / 0.9 * (2 / 3)  # ADV is Zipf over "y now": y gets 1 / (1 + 1/2)
    via_noun = 0.10 / 0.9 * 0.1  # y is topic b's noun: 0.1 of the mass under topic a
    expected = 0.5 * 0.9 * 0.9 * (via_adv + via_noun)  # p(a), x | N, run | V
    assert np.exp(tiny.log_joint([["x", "run", "y", "."]])[0, 0]) == pytest.approx(expected, rel=1e-12)


def test_tiny_grammar_sampler_matches_exact_joint_probabilities(tiny):
    n = 200_000
    counts = Counter((k, tuple(s)) for k, s in tiny.sample(n, np.random.default_rng(0)))
    support = sorted({tuple(s) for s in itertools.chain.from_iterable(
        itertools.product(tiny.words, repeat=L) for L in range(3, 6))})
    lj = tiny.log_joint(support)
    p = np.exp(lj)
    assert all(np.isfinite(lj[support.index(s), k]) for k, s in counts)  # nothing impossible drawn
    observed = np.array([[counts[(k, s)] for k in range(2)] for s in support])
    z = np.abs(observed - n * p) / np.sqrt(n * p * (1 - p) + 1e-12)
    assert z[p > 0].max() < 5.0
    assert observed.sum() == n


def test_rule_probabilities_must_sum_to_one():
    bad = dict(TINY_RULES, NP=[(("D", "N"), (.5, .7)), (("N",), (.4, .3))])
    with pytest.raises(ValueError):
        demo.Grammar(TINY_TOPICS, TINY_LEXICON, bad)


def test_generate_is_deterministic_in_seed():
    assert demo.generate(50, seed=3) == demo.generate(50, seed=3)
    assert demo.generate(50, seed=3) != demo.generate(50, seed=4)


def test_splits_are_deterministic_sized_and_distinct():
    a, b = demo.splits(seed=0, sizes=(300, 40, 50)), demo.splits(seed=0, sizes=(300, 40, 50))
    assert a == b
    assert [len(a[k]) for k in ("train", "valid", "test")] == [300, 40, 50]
    assert a["valid"] != a["test"][:40] and a["valid"] != a["train"][:40]
    assert demo.splits(seed=1, sizes=(300, 40, 50))["train"] != a["train"]


def test_lengths_and_vocabulary(sample):
    vocab = demo.vocabulary()
    assert 200 <= len(vocab) <= 500
    assert len(set(vocab)) == len(vocab)
    every = sum(len(demo._all_words(e)) for e in demo.LEXICON.values())
    assert every == len(vocab)  # no word is shared between categories or topics
    lens = [len(s) for _, s in sample]
    assert min(lens) == 5 and max(lens) == 20
    assert {w for _, s in sample for w in s} <= set(vocab)
    assert {w for s in demo.splits()["train"] for w in s} == set(vocab)  # every type is reachable


def test_log_prob_is_finite_on_samples_and_minus_inf_on_impossible(sample):
    good = sample[0][1]
    assert all(np.isfinite(demo.log_probs([s for _, s in sample])))
    assert np.isfinite(demo.log_prob(good)) and demo.log_prob(good) < 0
    impossible = [[], ["."], good[:-1], good[::-1], good[:-1] + ["xyzzy", "."],
                  ["the"] * 21, ["they", "sprinted", "the", "ball", "."][::-1]]
    for s in impossible:
        assert demo.log_prob(s) == -np.inf, s
    with pytest.raises(ValueError):
        demo.topic_posterior(["."])


def test_log_prob_marginalises_topics(sample):
    s = sample[1][1]
    lj = demo._DEMO.log_joint([s])[0]
    assert demo.log_prob(s) == pytest.approx(np.logaddexp.reduce(lj), rel=1e-12)
    assert demo.log_prob(s) >= lj.max()


def test_topic_posterior_is_informative_and_calibrated(sample):
    post = np.array([demo.topic_posterior(s) for _, s in sample])
    truth = np.array([k for k, _ in sample])
    assert post.shape == (len(sample), len(demo.TOPICS))
    np.testing.assert_allclose(post.sum(1), 1.0, atol=1e-12)
    assert (post.argmax(1) == truth).mean() > 0.95
    # If posterior and sampler agree, E[p(k_true | x)] = E[sum_k p(k | x)^2] and E[p(k | x)] = p(k).
    p_true = post[np.arange(len(truth)), truth]
    assert p_true.mean() == pytest.approx((post ** 2).sum(1).mean(), abs=0.01)
    np.testing.assert_allclose(post.mean(0), 1 / len(demo.TOPICS), atol=0.02)


def test_true_nll_counts_one_end_token_per_sentence():
    test = demo.splits()["test"]
    total, n_tokens = demo.true_nll(test)
    assert n_tokens == sum(len(s) for s in test) + len(test)
    assert total == pytest.approx(-sum(demo.log_prob(s) for s in test), rel=1e-9)
    assert 2.0 < total / n_tokens < 3.0


def test_nll_per_token_and_its_standard_error_match_known_values_and_the_spread_they_predict():
    # Equal lengths: the ratio is the mean of a_i / n and its standard error the plain mean's.
    a = np.array([20.0, 26.0, 23.0, 31.0])
    rate, se = demo.nll_per_token(-a, np.full(4, 10))
    assert rate == pytest.approx(a.mean() / 10, rel=1e-12)
    assert se == pytest.approx(np.std(a / 10, ddof=1) / 2, rel=1e-12)
    # Unequal lengths: the predicted standard error agrees with the spread of 60 independent
    # 300-sentence estimates (sd(a_i) / (sqrt(N) mean(n_i)), which forgets that long sentences
    # carry more NLL, reads 3x the spread).
    sents = [t for _, t in demo.generate(18_000, seed=5)]
    lp, n = demo.log_probs(sents), np.array([len(s) + 1 for s in sents])
    parts = [demo.nll_per_token(lp[i:i + 300], n[i:i + 300]) for i in range(0, 18_000, 300)]
    spread = np.std([r for r, _ in parts], ddof=1)
    assert 0.7 < np.median([s for _, s in parts]) / spread < 1.4
    # The pooled estimate is the same ratio over all sentences.
    assert demo.nll_per_token(lp, n)[0] == pytest.approx(-lp.sum() / n.sum(), rel=1e-12)


def test_entropy_rate_is_what_each_split_estimates():
    rate, se = demo.entropy_rate()
    assert 0 < se < 0.003
    for name, split in demo.splits().items():
        nll, tokens = demo.true_nll(split)
        split_se = demo.exact_nll_rate(split)[1]
        assert abs(nll / tokens - rate) < 4 * math.hypot(split_se, se), name


def test_fast_enough_for_a_cpu_demo():
    t0 = time.perf_counter()
    test = demo.splits()["test"]
    t1 = time.perf_counter()
    demo.log_probs(test)
    t2 = time.perf_counter()
    assert t1 - t0 < 2.0 and t2 - t1 < 2.0
