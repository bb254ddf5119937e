"""Tests of lm_eval/ngram.py: a hand-worked modified-KN example, normalisation, ARPA round trip,
agreement with the kenlm module and (when built) with KenLM's lmplz itself."""
from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
from fractions import Fraction as Fr
from pathlib import Path

import numpy as np
import pytest

from conftest import DATA
from lm_eval.ngram import LN10, NGramLM, kn_discounts

ROOT = Path(__file__).resolve().parents[1]

# ---------------------------------------------------------------- the hand-worked example
# Six sentences, framed <s> .. </s>; vocabulary <unk> <s> </s> a b c, so |V| = 5 (no <s>).
HAND = [["a"], ["a", "b"], ["a", "c"], ["b", "c", "c"], ["b", "c", "c"], ["c"]]

# Bigram counts (highest order: raw counts).
HAND_BIGRAMS = {("<s>", "a"): 3, ("<s>", "b"): 2, ("<s>", "c"): 1, ("a", "</s>"): 1,
                ("a", "b"): 1, ("a", "c"): 1, ("b", "c"): 2, ("b", "</s>"): 1,
                ("c", "c"): 2, ("c", "</s>"): 4}
# Unigram adjusted counts = distinct left neighbours: a {<s>}, b {<s>, a}, c {<s>, a, b, c},
# </s> {a, b, c}; <unk> and <s> have 0. Raw counts (occurrences) for comparison.
HAND_ADJUSTED = {"<unk>": 0, "<s>": 0, "</s>": 3, "a": 1, "b": 2, "c": 4}
HAND_RAW = {"<unk>": 0, "<s>": 0, "</s>": 6, "a": 3, "b": 3, "c": 6}

# Bigram counts-of-counts n1..n4 = 5, 3, 1, 1 (count 4: c </s>), Y = 5 / (5 + 2*3) = 5/11:
# D1 = 1 - 2 Y 3/5 = 5/11, D2 = 2 - 3 Y 1/3 = 17/11, D3+ = 3 - 4 Y 1/1 = 13/11.
D2GRAM = (Fr(5, 11), Fr(17, 11), Fr(13, 11))
# Unigrams: lmplz's statistics see c (the suffix of the last bigram in suffix order, c c) with its
# raw count 6 instead of 4, so n1..n4 = 1 (a), 1 (b), 1 (</s>), 0; Y = 1/3:
# D1 = 1 - 2/3 = 1/3, D2 = 2 - 3 Y = 1, D3+ = 3 - 0 = 3. (lmplz prints exactly these.)
D1GRAM = (Fr(1, 3), Fr(1), Fr(3))

# Unigrams: denominator 1+2+4+3 = 10; gamma = (D1*1 + D2*1 + D3*2) / 10 = 11/15, spread over |V|=5.
G0 = Fr(11, 15)
P1 = {"a": (1 - Fr(1, 3)) / 10 + G0 / 5,          # 16/75
      "b": (2 - Fr(1)) / 10 + G0 / 5,              # 37/150
      "c": (4 - Fr(3)) / 10 + G0 / 5,              # 37/150
      "</s>": (3 - Fr(3)) / 10 + G0 / 5,           # 11/75
      "<unk>": G0 / 5}                             # 11/75: only the interpolated uniform mass
# Bigram contexts: denominators 6 (<s>), 3 (a), 3 (b), 6 (c).
D1, D2, D3 = D2GRAM
GAMMA = {"<s>": (D3 + D2 + D1) / 6,                # 35/66
         "a": 3 * D1 / 3,                          # 5/11
         "b": (D2 + D1) / 3,                       # 2/3
         "c": (D2 + D3) / 6}                       # 5/11
P2 = {("<s>", "a"): (3 - D3) / 6 + GAMMA["<s>"] * P1["a"],      # 206/495
      ("<s>", "b"): (2 - D2) / 6 + GAMMA["<s>"] * P1["b"],      # 409/1980
      ("<s>", "c"): (1 - D1) / 6 + GAMMA["<s>"] * P1["c"],      # 439/1980
      ("a", "b"): (1 - D1) / 3 + GAMMA["a"] * P1["b"],          # 97/330
      ("b", "</s>"): (1 - D1) / 3 + GAMMA["b"] * P1["</s>"],    # 692/2475
      ("c", "</s>"): (4 - D3) / 6 + GAMMA["c"] * P1["</s>"],    # 59/110
      ("c", "c"): (2 - D2) / 6 + GAMMA["c"] * P1["c"]}          # 31/165

# What lmplz 0.3.0 (`lmplz -o 2`) writes for HAND: float32, 8 significant digits.
HAND_LMPLZ_ARPA = """\\data\\
ngram 1=6
ngram 2=10

\\1-grams:
-0.8336686\t<unk>\t0
0\t<s>\t-0.27547592
-0.8336686\t</s>\t0
-0.6709413\ta\t-0.34242272
-0.60788953\tb\t-0.17609124
-0.60788953\tc\t-0.34242272

\\2-grams:
-0.6047001\ta </s>
-0.55346906\tb </s>
-0.27054065\tc </s>
-0.38073796\t<s> a
-0.6849419\t<s> b
-0.5317422\ta b
-0.6542007\t<s> c
-0.5317422\ta c
-0.5003684\tb c
-0.72612226\tc c

\\end\\
"""


@pytest.fixture(scope="module")
def hand() -> NGramLM:
    return NGramLM.train(HAND, order=2)


def test_hand_counts(hand):
    uni, bi = hand.ngram_table(1), hand.ngram_table(2)
    assert {k[0]: v.count for k, v in uni.items()} == HAND_ADJUSTED
    assert {k[0]: v.raw_count for k, v in uni.items()} == HAND_RAW
    assert {k: v.count for k, v in bi.items()} == HAND_BIGRAMS
    assert {k: v.raw_count for k, v in bi.items()} == HAND_BIGRAMS


def test_hand_discounts(hand):
    s1, s2 = hand.stats
    assert s2.counts_of_counts == (5, 3, 1, 1)
    assert s1.counts_of_counts == (1, 1, 1, 0)
    assert not hand.used_discount_fallback
    np.testing.assert_allclose(s2.discounts, [float(d) for d in D2GRAM], rtol=1e-12)
    np.testing.assert_allclose(s1.discounts, [float(d) for d in D1GRAM], rtol=1e-12)


def test_hand_probabilities(hand):
    uni, bi = hand.ngram_table(1), hand.ngram_table(2)
    for w, p in P1.items():
        assert uni[(w,)].logprob == pytest.approx(math.log(p), rel=1e-12)
    assert sum(P1.values()) == 1
    assert uni[("<s>",)].logprob == 0.0                       # lmplz's convention
    for ng, p in P2.items():
        assert bi[ng].logprob == pytest.approx(math.log(p), rel=1e-12)
    for ctx, g in GAMMA.items():
        assert uni[(ctx,)].backoff == pytest.approx(math.log(g), rel=1e-12)
    assert uni[("</s>",)].backoff == 0.0 and uni[("<unk>",)].backoff == 0.0   # not contexts
    # An unseen bigram backs off: p(a | c) = gamma(c) p(a) = 16/165.
    assert hand.logprob("a", ["c"]) == pytest.approx(math.log(Fr(16, 165)), rel=1e-12)
    # p(</s> | <s>) = gamma(<s>) p(</s>) = 7/90.
    assert hand.logprob("</s>", ["<s>"]) == pytest.approx(math.log(Fr(7, 90)), rel=1e-12)


def test_hand_sentence_scores(hand):
    # <s> a b </s> and <s> zzz </s> (zzz is scored as <unk>; <unk> </s> backs off with weight 1).
    want = [math.log(P2[("<s>", "a")] * P2[("a", "b")] * P2[("b", "</s>")]),
            math.log(GAMMA["<s>"] * P1["<unk>"] * P1["</s>"])]
    np.testing.assert_allclose(hand.sentence_logprobs([["a", "b"], ["zzz"]]), want, rtol=1e-12)
    res = hand.score([["a", "b"], ["zzz"]])
    assert (res.tokens, res.oov, res.sentences) == (5, 1, 2)
    assert res.logprob == pytest.approx(sum(want), rel=1e-12)
    assert res.ppl == pytest.approx(math.exp(-sum(want) / 5), rel=1e-12)


def test_reads_lmplz_arpa_of_hand_corpus(hand, tmp_path):
    path = tmp_path / "hand.arpa"
    path.write_text(HAND_LMPLZ_ARPA)
    lmplz = NGramLM.from_arpa(path)
    assert lmplz.vocab == hand.vocab
    for n in (1, 2):
        ours, theirs = hand.ngram_arrays(n), lmplz.ngram_arrays(n)
        np.testing.assert_array_equal(ours[0], theirs[0])
        np.testing.assert_allclose(ours[1], theirs[1], atol=1e-6)
        np.testing.assert_allclose(ours[2], theirs[2], atol=1e-6)


# ---------------------------------------------------------------- a synthetic corpus
def markov_corpus(n_sent: int, seed: int, vocab: int = 150) -> list[list[str]]:
    """Sentences from a sparse random bigram chain with Zipf-like rows; one word is `<unk>`.

    600 sentences of it give closed-form discounts at every order 1..6 (no fallback).
    """
    rng = np.random.default_rng(seed)
    words = [f"w{i}" for i in range(vocab - 1)] + ["<unk>"]
    zipf = 1.0 / np.arange(1, vocab + 2)
    rng_rows = np.random.default_rng(1234)                   # one chain for every seed
    trans = rng_rows.dirichlet(0.03 * vocab * zipf / zipf.sum() + 1e-3, size=vocab + 1)
    trans[:, vocab] += 0.1                                   # row vocab = <s>; column = </s>
    trans /= trans.sum(1, keepdims=True)
    out = []
    for _ in range(n_sent):
        prev, sent = vocab, []
        while len(sent) < 30:
            nxt = rng.choice(vocab + 1, p=trans[prev])
            if nxt == vocab:
                break
            sent.append(words[nxt])
            prev = nxt
        out.append(sent)
    return out


@pytest.fixture(scope="module")
def corpus() -> list[list[str]]:
    return markov_corpus(600, seed=0)


@pytest.fixture(scope="module")
def heldout() -> list[list[str]]:
    return markov_corpus(200, seed=1) + [["never", "seen", "w1"], [], ["<s>", "w2", "</s>"]]


CONTEXTS = [[], ["<s>"], ["<s>", "w0"], ["w1", "w2"], ["w3", "w3", "w3"], ["never", "seen"],
            ["<s>", "never"], ["<unk>", "w4"], ["w5", "<unk>"],
            ["w1", "w2", "w3", "w4", "w5", "w6", "w7"]]


@pytest.mark.parametrize("order", [1, 2, 3, 4, 5, 6])
def test_distributions_sum_to_one(corpus, order, tmp_path):
    lm = NGramLM.train(corpus, order=order)
    lm.to_arpa(tmp_path / "m.arpa")
    for model in (lm, NGramLM.from_arpa(tmp_path / "m.arpa")):
        for ctx in CONTEXTS:
            lp = model.next_word_logprobs(ctx)
            assert lp[model.word2id["<s>"]] == -np.inf
            assert np.exp(lp).sum() == pytest.approx(1.0, abs=1e-6), ctx
            assert np.isfinite(np.delete(lp, model.word2id["<s>"])).all()


@pytest.mark.parametrize("order", [3, 6])
@pytest.mark.parametrize("suffix", [".arpa", ".arpa.gz"])
def test_arpa_round_trip_is_exact(corpus, heldout, order, suffix, tmp_path):
    lm = NGramLM.train(corpus, order=order)
    lm.to_arpa(tmp_path / f"m{suffix}")
    back = NGramLM.from_arpa(tmp_path / f"m{suffix}")
    assert back.vocab == lm.vocab and back.num_ngrams() == lm.num_ngrams()
    for n in range(1, order + 1):
        for a, b in zip(lm.ngram_arrays(n), back.ngram_arrays(n)):
            np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(lm.sentence_logprobs(heldout), back.sentence_logprobs(heldout))
    assert lm.score(heldout) == back.score(heldout)


def test_kenlm_module_agrees(corpus, heldout, tmp_path):
    kenlm = pytest.importorskip("kenlm")
    test = heldout + [["w1", "zzz", "<unk>", "w2"], ["<unk>"]]
    for order in (2, 4):
        lm = NGramLM.train(corpus, order=order)
        lm.to_arpa(tmp_path / "m.arpa")
        ken = kenlm.Model(str(tmp_path / "m.arpa"))
        plain = [" ".join(w for w in s if w not in ("<s>", "</s>")) for s in test]   # we drop them
        theirs = np.array([ken.score(s, bos=True, eos=True) for s in plain]) * LN10
        np.testing.assert_allclose(lm.sentence_logprobs(test), theirs, atol=1e-4)
        oov = sum(w not in ken or w == "<unk>" for s in test for w in s if w not in ("<s>", "</s>"))
        assert lm.score(test).oov == oov


def test_own_text_beats_shuffled(corpus, heldout):
    lm = NGramLM.train(corpus, order=3)
    rng = np.random.default_rng(0)
    shuffled = [list(rng.permutation(s)) for s in heldout]
    real, fake = lm.score(heldout), lm.score(shuffled)
    assert real.tokens == fake.tokens
    assert real.ppl < 0.8 * fake.ppl


def test_score_bookkeeping(corpus):
    lm = NGramLM.train(corpus, order=3)
    sents = [["w1", "w2"], [], ["qq", "<unk>", "w3"], ["<s>", "w1", "w2", "</s>"]]
    res = lm.score(sents)
    assert res.sentences == 4
    assert res.tokens == 3 + 1 + 4 + 3            # words + </s>; literal <s> / </s> are dropped
    assert res.oov == 2                           # qq and the literal <unk>
    per = lm.sentence_logprobs(sents)
    assert per[0] == per[3] and res.logprob == pytest.approx(per.sum())
    assert res.ppl == pytest.approx(math.exp(-per.sum() / res.tokens))
    assert math.isnan(lm.score([]).ppl)


def test_more_context_helps_on_repetitive_text(corpus):
    ppl = [NGramLM.train(corpus, order=o).score(corpus).ppl for o in (1, 2, 3)]
    assert ppl[0] > ppl[1] > ppl[2]


# ---------------------------------------------------------------- discounts and fallback
def test_kn_discount_formula():
    d, why = kn_discounts((100, 40, 20, 10))
    y = 100 / 180
    assert why is None
    np.testing.assert_allclose(d, [1 - 2 * y * 0.4, 2 - 3 * y * 0.5, 3 - 4 * y * 0.5])
    assert kn_discounts((5, 0, 1, 1))[1] == "no n-grams with adjusted count 2"
    assert "D2=" in kn_discounts((10, 1, 10, 1))[1]          # Y = 5/6: D2 = 2 - 3 Y 10 < 0
    assert "D3=" in kn_discounts((10, 5, 1, 10))[1]          # Y = 1/2: D3 = 3 - 4 Y 10 < 0


def test_discount_fallback_on_degenerate_corpus():
    same = [["the", "cat", "sat"]] * 10
    with pytest.warns(RuntimeWarning, match="fallback"):
        lm = NGramLM.train(same, order=3)
    assert lm.used_discount_fallback and lm.fallback_orders == [1, 2, 3]
    assert all(s.discounts == (0.5, 1.0, 1.5) and s.reason for s in lm.stats)
    for ctx in ([], ["<s>"], ["<s>", "the"], ["cat", "sat"], ["dog"]):
        assert np.exp(lm.next_word_logprobs(ctx)).sum() == pytest.approx(1.0, abs=1e-9)
    res = lm.score(same[:2] + [["the", "dog", "sat"]])
    assert np.isfinite(res.logprob) and res.oov == 1
    # lmplz -o 3 --discount_fallback on this text writes -1 for <unk>, -0.026006712 for <s> the cat.
    assert lm.logprob("<unk>") == pytest.approx(-LN10)
    assert lm.logprob("cat", ["<s>", "the"]) == pytest.approx(-0.026006712 * LN10, abs=1e-6)

    with pytest.warns(RuntimeWarning):
        custom = NGramLM.train(same, order=2, discount_fallback=(0.7, 1.0, 1.2))
    assert custom.stats[0].discounts == (0.7, 1.0, 1.2)
    with pytest.raises(ValueError, match="discount"):
        NGramLM.train(same, order=2, discount_fallback=None)
    with pytest.raises(ValueError):
        NGramLM.train(same, order=2, discount_fallback=(2.0, 1.0, 1.0))


@pytest.mark.parametrize("sents", [[], [[]], [["x"]], [[], ["x", "y"], ["x"]]])
@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_tiny_corpora_do_not_crash(sents, tmp_path):
    for order in range(1, 7):
        lm = NGramLM.train(sents, order=order)
        test = [[], ["x"], ["q", "x", "y"]]
        lp = lm.sentence_logprobs(test)
        # Each sentence's log-probability is the chain rule over its words and </s>, each factor
        # read from the next-word distribution (a normalised one, checked below) at that context.
        for sent, got in zip(test, lp):
            words = [*sent, "</s>"]
            chain = sum(lm.logprob(w, ["<s>", *words[:i]]) for i, w in enumerate(words))
            assert np.isfinite(got) and got == pytest.approx(chain, abs=1e-9), (order, sent)
        for ctx in ([], ["<s>"], ["<s>", "x", "y"]):
            assert np.exp(lm.next_word_logprobs(ctx)).sum() == pytest.approx(1.0, abs=1e-9)
        lm.to_arpa(tmp_path / "t.arpa")
        back = NGramLM.from_arpa(tmp_path / "t.arpa")
        np.testing.assert_array_equal(back.sentence_logprobs(test), lp)


def test_order_is_checked():
    for bad in (0, 7):
        with pytest.raises(ValueError, match="order"):
            NGramLM.train([["a"]], order=bad)


# ---------------------------------------------------------------- parity with lmplz itself
def find_lmplz() -> str | None:
    """$LMPLZ, else lmplz on PATH, else one built under tools/ (git-ignored); None if none runs."""
    candidates = [os.environ.get("LMPLZ"), shutil.which("lmplz")]
    candidates += [str(p) for p in sorted(ROOT.glob("tools/*/build/bin/lmplz"))]
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


def ptb_dir() -> Path:
    return DATA / "ptb"


def run_lmplz(lmplz: str, sents: list[list[str]], order: int, tmp: Path,
              fallback: bool = False) -> tuple[Path, list[tuple[float, float, float]]]:
    """ARPA path and the discounts lmplz printed, for `lmplz -o order` on these sentences."""
    text, arpa = tmp / f"train{order}.txt", tmp / f"lmplz{order}.arpa"
    text.write_text("".join(" ".join(s) + "\n" for s in sents))
    cmd = [lmplz, "-o", str(order), "-S", "10%", "-T", str(tmp)]
    cmd += ["--discount_fallback"] if fallback else []
    with open(text, "rb") as fin, open(arpa, "wb") as fout:
        done = subprocess.run(cmd, stdin=fin, stdout=fout, stderr=subprocess.PIPE, check=True)
    stats = re.findall(r"^\d+ \d+ D1=(\S+) D2=(\S+) D3\+=(\S+)$", done.stderr.decode(), re.M)
    return arpa, [tuple(float(x) for x in d) for d in stats]


def assert_same_model(ours: NGramLM, arpa: Path, discounts, atol: float = 2e-6) -> None:
    theirs = NGramLM.from_arpa(arpa)
    assert theirs.vocab == ours.vocab and theirs.num_ngrams() == ours.num_ngrams()
    for n in range(1, ours.order + 1):
        a, b = ours.ngram_arrays(n), theirs.ngram_arrays(n)
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_allclose(a[1], b[1], atol=atol)
        np.testing.assert_allclose(a[2], b[2], atol=atol)
    np.testing.assert_allclose([s.discounts for s in ours.stats], discounts, rtol=1e-5)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_lmplz_parity_small(corpus, tmp_path):
    lmplz = find_lmplz()
    if lmplz is None:
        pytest.skip("lmplz not found (set LMPLZ or put it on PATH)")
    renamed = [["UNKWORD" if w == "<unk>" else w for w in s] for s in corpus]
    for sents, order, fallback in ((HAND, 2, False), (renamed, 3, False), (renamed, 6, True),
                                   ([["the", "cat", "sat"]] * 10, 3, True)):
        arpa, discounts = run_lmplz(lmplz, sents, order, tmp_path, fallback)
        assert_same_model(NGramLM.train(sents, order=order), arpa, discounts)


@pytest.mark.parametrize("order", [2, 3, 4, 5])
def test_lmplz_parity_ptb(order, tmp_path):
    lmplz = find_lmplz()
    if lmplz is None:
        pytest.skip("lmplz not found (set LMPLZ or put it on PATH)")
    if not (ptb_dir() / "ptb.train.txt").exists():
        pytest.skip("PTB not found")

    def read(split):   # lmplz refuses <unk> in its input: rename it on both sides
        with open(ptb_dir() / f"ptb.{split}.txt") as f:
            return [["UNKWORD" if w == "<unk>" else w for w in line.split()] for line in f]

    train, test = read("train"), read("test")
    arpa, discounts = run_lmplz(lmplz, train, order, tmp_path)
    ours = NGramLM.train(train, order=order)
    try:
        import kenlm
        ken = kenlm.Model(str(arpa))
        their_lp = sum(ken.score(" ".join(s), bos=True, eos=True) for s in test) * LN10
    except ImportError:
        their_lp = NGramLM.from_arpa(arpa).score(test).logprob
    res = ours.score(test)
    their_ppl = math.exp(-their_lp / res.tokens)
    assert res.ppl == pytest.approx(their_ppl, rel=1e-3)
    assert_same_model(ours, arpa, discounts)


def test_streamed_input_in_small_chunks_gives_the_same_model(corpus, heldout, monkeypatch,
                                                              tmp_path):
    # Sentences read from a generator a few at a time (as `evaluate` streams its samples file)
    # give the model and scores a list gives; markers inside a chunk are still dropped.
    import lm_eval.ngram as ngram
    whole = NGramLM.train(corpus + [["<s>", "w1", "</s>"]], order=3, vocab=["extra"])
    monkeypatch.setattr(ngram, "ENCODE_CHUNK", 7)
    streamed = NGramLM.train((s for s in corpus + [["<s>", "w1", "</s>"]]), order=3,
                             vocab=["extra"])
    assert streamed.vocab == whole.vocab
    whole.to_arpa(tmp_path / "a.arpa")
    streamed.to_arpa(tmp_path / "b.arpa")
    assert (tmp_path / "a.arpa").read_text() == (tmp_path / "b.arpa").read_text()
    a, b = whole.score(heldout), streamed.score(iter(heldout))
    assert (a.logprob, a.tokens, a.oov) == (b.logprob, b.tokens, b.oov)
