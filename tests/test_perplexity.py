"""Forward / reverse perplexity protocol on the offline demo corpus, and the CLI around it."""
import json
import math
import random

import numpy as np
import pytest
from typer.testing import CliRunner

from cli import app
from corpora.registry import load_corpus
from lm_eval.ngram import NGramLM
from lm_eval.perplexity import PPLConfig, perplexities


def test_real_text_has_low_fppl_and_rppl(demo):
    real = demo.split("valid")
    res = perplexities(real, demo, PPLConfig(order=3), progress=False)
    # The demo grammar's true perplexity is about 12.6; a trigram on 10k sentences is close.
    assert 10 < res["real_fppl"] < 25 and 10 < res["fppl"] < 25
    assert res["rppl"] < 40
    assert res["tokens"]["fppl"] == sum(len(s) + 1 for s in real)
    assert res["samples"] == len(real)


def test_collapsed_samples_get_a_far_higher_reverse_perplexity(demo):
    real = demo.split("valid")
    one = [real[0]] * len(real)
    good = perplexities(real, demo, PPLConfig(order=3), progress=False)
    with pytest.warns(RuntimeWarning):    # a single repeated sentence needs the discount fallback
        bad = perplexities(one, demo, PPLConfig(order=3), progress=False)
    assert bad["rppl"] > 5 * good["rppl"]   # about 10x on the 289-word demo vocabulary
    assert bad["fppl"] < good["fppl"] * 2   # one fluent sentence is still fluent


def test_shuffled_words_score_worse_than_text(demo):
    lm = NGramLM.train(demo.train, order=3)
    rng = random.Random(0)
    real = demo.split("test")
    shuffled = [rng.sample(s, len(s)) for s in real]
    assert lm.score(shuffled).ppl > 3 * lm.score(real).ppl


def test_extra_vocabulary_keeps_distributions_normalised(demo):
    words = sorted({w for s in demo.train for w in s})
    lm = NGramLM.train(demo.split("valid")[:20], order=3, vocab=words)
    assert set(words) <= set(lm.vocab)
    for ctx in ([], ["<s>"], ["<s>", words[0]], [words[3], words[5]]):
        lp = lm.next_word_logprobs(ctx)
        assert math.isclose(np.exp(lp[np.isfinite(lp)]).sum(), 1.0, abs_tol=1e-6)
    # An unseen corpus word is no longer `<unk>`: it has its own (uniform-share) probability.
    unseen = next(w for w in words if w not in {x for s in demo.split("valid")[:20] for x in s})
    assert lm.score([[unseen]]).oov == 0


def test_perplexity_cli_json(tmp_path, demo):
    samples = tmp_path / "samples.txt"
    samples.write_text("\n".join(" ".join(s) for s in demo.split("valid")[:500]) + "\n")
    r = CliRunner().invoke(app, ["perplexity", str(samples), "--corpus", "demo", "--order", "3", "--json"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.output.strip().splitlines()[-1])
    for k in ("fppl", "rppl", "lm", "samples", "tokens"):
        assert k in res
    assert res["lm"] == "ngram" and res["samples"] == 500 and res["fppl"] > 1
    r = CliRunner().invoke(app, ["perplexity", str(tmp_path / "missing.txt"), "--corpus", "demo"])
    assert r.exit_code != 0 and "Traceback" not in r.output


def test_lstm_perplexities_and_forward_lm_cache(demo, tmp_path, monkeypatch):
    from lm_eval.lstm_lm import LSTMLMConfig

    monkeypatch.setenv("TEXTEBM_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "small"
    folder.mkdir()
    for split, n in (("train", 600), ("valid", 100), ("test", 100)):
        (folder / f"{split}.txt").write_text("\n".join(" ".join(s) for s in demo.split(split)[:n]) + "\n")
    corpus = load_corpus(str(folder))
    cfg = PPLConfig(lm="lstm", lstm=LSTMLMConfig(embed=16, hidden=16, max_epochs=2, batch_size=32))
    real = demo.split("valid")[100:300]
    res = perplexities(real, corpus, cfg, progress=False)
    assert res["lm"] == "lstm" and res["tokens"]["fppl"] == sum(len(s) + 1 for s in real)
    assert 1 < res["fppl"] < 289 and 1 < res["rppl"] < 289     # better than uniform over the vocabulary
    cached = list((tmp_path / "cache" / "lm").glob("small-lstm-*/done"))
    assert len(cached) == 1
    again = perplexities(real, corpus, cfg, progress=False)     # the forward LM comes from the cache
    assert again["fppl"] == res["fppl"] and again["real_fppl"] == res["real_fppl"]
    # The cache is keyed by the sentences, not the path: a copy elsewhere finds the same LM, an
    # edited training split does not.
    import shutil
    from lm_eval.perplexity import _lstm_cache
    moved = shutil.copytree(folder, tmp_path / "elsewhere" / "small")
    assert _lstm_cache(load_corpus(str(moved)), cfg) == _lstm_cache(corpus, cfg)
    (moved / "train.txt").write_text((moved / "train.txt").read_text() + "one more line\n")
    assert _lstm_cache(load_corpus(str(moved)), cfg) != _lstm_cache(corpus, cfg)
