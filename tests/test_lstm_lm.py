"""The evaluator LSTM LM: its scores are proper, padding-free sentence log-probabilities; it learns;
its files round-trip; a resumed run is the run that was not interrupted."""
from __future__ import annotations

import math
import random

import pytest
import torch

from corpora.batching import frame
from corpora.vocab import PAD_ID, Vocab
from lm_eval.lstm_lm import (MODEL, LSTMLM, LSTMLMConfig, _sorted_batches, evaluate_ppl, load_lm,
                             save_lm, sentence_nll, train_lstm_lm)
from textebm.checkpoint import CheckpointError

torch.set_num_threads(1)

# Ten words on a ring; a sentence starts anywhere and walks on for 3-6 words. Given its first word
# the rest is determined except where it stops, so a good model is far below the uniform 13.
RING = [f"w{i}" for i in range(10)]


def ring_corpus(n: int, seed: int) -> list[list[str]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        k, n_words = rng.randrange(10), rng.randint(3, 6)
        out.append([RING[(k + j) % 10] for j in range(n_words)])
    return out


TINY = LSTMLMConfig(embed=16, hidden=32, dropout=0.0, batch_size=16, max_epochs=6, seed=0)


@pytest.fixture(scope="module")
def vocab():
    return Vocab.build([RING])


@pytest.fixture(scope="module")
def trained(vocab):
    model, history = train_lstm_lm(ring_corpus(400, 0), ring_corpus(60, 1), vocab, TINY,
                                   device="cpu", progress=False)
    return model, history


def random_sentences(vocab: Vocab, n: int, seed: int) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    lens = torch.randint(0, 9, (n,), generator=g).tolist()
    return [torch.randint(4, len(vocab), (L,), generator=g).tolist() for L in lens]


def test_batch_log_prob_equals_one_sentence_at_a_time(vocab):
    torch.manual_seed(0)
    model = LSTMLM(len(vocab), LSTMLMConfig(embed=16, hidden=24, layers=2)).eval()
    sents = random_sentences(vocab, 12, seed=1)
    with torch.no_grad():
        batched = model.log_prob(frame(sents))
        alone = torch.cat([model.log_prob(frame([s])) for s in sents])
    assert (frame(sents) == PAD_ID).any()  # the batch really is padded
    torch.testing.assert_close(batched, alone, rtol=0, atol=1e-5)


def test_evaluation_batches_cover_every_sentence_once_within_their_caps(vocab):
    sents = random_sentences(vocab, 50, seed=3) + [list(range(4, 14)) * 3]  # one of 30 words
    seen = []
    for _, x in _sorted_batches(sents, batch_size=8, max_tokens=20):
        width = x.size(1) - 1
        assert x.size(0) <= 8 and (x.size(0) == 1 or x.size(0) * width <= 20)
        seen += [tuple(int(i) for i in row[1:] if i > 3) for row in x]
    assert sorted(seen) == sorted(tuple(s) for s in sents)
    torch.manual_seed(0)
    model = LSTMLM(len(vocab), LSTMLMConfig(embed=8, hidden=8))
    words = [vocab.decode(s) for s in sents]
    small = evaluate_ppl(model, words, vocab, "cpu", batch_size=3, max_tokens=10)
    big = evaluate_ppl(model, words, vocab, "cpu")
    assert small["tokens"] == big["tokens"] and small["nll"] == pytest.approx(big["nll"], rel=1e-6)


def test_next_word_distribution_sums_to_one_and_agrees_with_log_prob(vocab):
    torch.manual_seed(0)
    model = LSTMLM(len(vocab), LSTMLMConfig(embed=16, hidden=24)).eval()
    x = frame(random_sentences(vocab, 6, seed=2))
    with torch.no_grad():
        lp = model.next_log_probs(x)                                  # (B, T-1, V)
        per_sentence = model.log_prob(x)
    torch.testing.assert_close(lp.exp().sum(-1), torch.ones(lp.shape[:2]), rtol=0, atol=1e-5)
    tgt = x[:, 1:]
    gathered = lp.gather(-1, tgt.unsqueeze(-1)).squeeze(-1).masked_fill(tgt == PAD_ID, 0).sum(1)
    torch.testing.assert_close(per_sentence, gathered, rtol=0, atol=1e-5)


def test_training_learns_the_ring_and_keeps_the_best_weights(trained, vocab):
    model, history = trained
    assert len(history) == TINY.max_epochs
    assert set(history[0]) >= {"train_ppl", "valid_ppl", "lr", "seconds", "tok_s"}
    test = ring_corpus(100, 2)
    r = evaluate_ppl(model, test, vocab, "cpu")
    assert r["ppl"] < 2.5 < len(vocab) / 5  # the ideal is about 1.96 (exp(log 40 / 5.5)); uniform 14
    assert r["ppl"] == pytest.approx(min(h["valid_ppl"] for h in history), rel=0.2)
    v = evaluate_ppl(model, ring_corpus(60, 1), vocab, "cpu")  # the validation set itself
    assert v["ppl"] == pytest.approx(min(h["valid_ppl"] for h in history), rel=1e-5)
    rng = random.Random(3)
    shuffled = [rng.sample(s, len(s)) for s in test]
    assert evaluate_ppl(model, shuffled, vocab, "cpu")["ppl"] > 3 * r["ppl"]


def test_save_load_round_trip_gives_identical_scores(trained, vocab, tmp_path):
    model, _ = trained
    save_lm(tmp_path, model, TINY, vocab)
    loaded, cfg, vocab2 = load_lm(tmp_path, "cpu")
    assert cfg == TINY and vocab2.itos == vocab.itos and not loaded.training
    test = ring_corpus(50, 4)
    assert evaluate_ppl(loaded, test, vocab2, "cpu") == evaluate_ppl(model, test, vocab, "cpu")
    (tmp_path / MODEL).write_bytes((tmp_path / MODEL).read_bytes()[:100])
    with pytest.raises(CheckpointError):
        load_lm(tmp_path, "cpu")


def test_oov_words_are_scored_as_unk_and_counted(vocab):
    torch.manual_seed(0)
    model = LSTMLM(len(vocab), LSTMLMConfig(embed=8, hidden=8))
    sents = [["w1", "zebra", "w2"], ["<unk>", "w3"], [], ["yak", "yak"]]
    r = evaluate_ppl(model, sents, vocab, "cpu", batch_size=2)
    assert r["tokens"] == 7 + len(sents)  # every word and one </s> per sentence
    assert r["oov"] == 3 and r["unk"] == 4 and r["sentences"] == 4
    assert r["ppl"] == pytest.approx(math.exp(r["nll"] / r["tokens"]))
    same = [["w1", "<unk>", "w2"], ["<unk>", "w3"], [], ["<unk>", "<unk>"]]
    assert evaluate_ppl(model, same, vocab, "cpu")["nll"] == pytest.approx(r["nll"], rel=1e-6)


def test_resumed_training_equals_uninterrupted_training(vocab, tmp_path):
    cfg = LSTMLMConfig(embed=8, hidden=16, dropout=0.3, batch_size=16, max_epochs=2, seed=5)
    train, valid = ring_corpus(96, 6), ring_corpus(20, 7)
    full, h_full = train_lstm_lm(train, valid, vocab, cfg, progress=False, ckpt_dir=tmp_path / "a")
    one = LSTMLMConfig(**{**cfg.to_dict(), "max_epochs": 1})
    train_lstm_lm(train, valid, vocab, one, progress=False, ckpt_dir=tmp_path / "b")
    resumed, h_res = train_lstm_lm(train, valid, vocab, cfg, progress=False,
                                   ckpt_dir=tmp_path / "b")
    assert [h["valid_ppl"] for h in h_res] == [h["valid_ppl"] for h in h_full]
    for (k, a), (_, b) in zip(full.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), k
    again, h_again = train_lstm_lm(train, valid, vocab, cfg, progress=False,  # finished: no-op
                                   ckpt_dir=tmp_path / "b")
    assert h_again == h_res
    loaded, _, _ = load_lm(tmp_path / "b")
    for (k, a), (_, b) in zip(full.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), k
    with pytest.raises(CheckpointError):  # another recipe in the same folder
        train_lstm_lm(train, valid, vocab, LSTMLMConfig(**{**cfg.to_dict(), "hidden": 8}),
                      progress=False, ckpt_dir=tmp_path / "b")


def test_the_best_epoch_not_the_last_is_returned(vocab):
    # Validation walks the ring backwards: the better the model learns the training direction,
    # the worse it scores validation, so the first epoch is the best one.
    train = ring_corpus(200, 10)
    valid = [s[::-1] for s in ring_corpus(40, 11)]
    cfg = LSTMLMConfig(embed=16, hidden=32, dropout=0.0, batch_size=16, max_epochs=4, max_decays=5)
    model, h = train_lstm_lm(train, valid, vocab, cfg, progress=False)
    assert h[-1]["valid_ppl"] > 1.1 * h[0]["valid_ppl"] and not h[-1]["best"]
    assert evaluate_ppl(model, valid, vocab, "cpu")["ppl"] == pytest.approx(
        min(x["valid_ppl"] for x in h), rel=1e-5)


def test_lr_decays_on_every_plateau_then_training_stops(vocab):
    # An lr too small to move float32 weights: validation never improves after the first epoch.
    train, valid = ring_corpus(32, 8), ring_corpus(8, 9)
    cfg = LSTMLMConfig(embed=8, hidden=8, batch_size=16, lr=1e-30, max_decays=2, max_epochs=30)
    _, h = train_lstm_lm(train, valid, vocab, cfg, progress=False)
    assert [x["lr"] for x in h] == pytest.approx([1e-30, 2.5e-31, 6.25e-32, 6.25e-32 / 4])
    assert [x["best"] for x in h] == [True, False, False, False]
    cfg = LSTMLMConfig(**{**cfg.to_dict(), "max_decays": 10, "patience": 2})
    _, h = train_lstm_lm(train, valid, vocab, cfg, progress=False)
    assert len(h) == 3


def test_tied_embeddings_share_one_matrix(vocab):
    model = LSTMLM(len(vocab), LSTMLMConfig(embed=12, hidden=12, tied=True))
    assert model.proj.weight is model.embed.weight
    with pytest.raises(ValueError):
        LSTMLMConfig(embed=12, hidden=16, tied=True)


def test_bf16_training_learns_the_ring_too(trained, vocab):
    # --precision bf16 for the evaluator LM: same recipe, bf16 LSTM and softmax matmuls; it
    # learns the ring as well as fp32 (within 10% perplexity) and records its precision.
    cfg = LSTMLMConfig(**{**TINY.to_dict(), "precision": "bf16"})
    model, _ = train_lstm_lm(ring_corpus(400, 0), ring_corpus(60, 1), vocab, cfg, device="cpu",
                             progress=False)
    assert model.compute_dtype == torch.bfloat16 and model.cfg.precision == "bf16"
    test = ring_corpus(100, 2)
    low = evaluate_ppl(model, test, vocab, "cpu")["ppl"]
    full = evaluate_ppl(trained[0], test, vocab, "cpu")["ppl"]
    assert low == pytest.approx(full, rel=0.1) and low < 2.5
    with pytest.raises(ValueError, match="precision"):
        LSTMLMConfig(precision="fp16")


def test_sentence_nll_is_each_sentence_alone_in_input_order(vocab):
    # Batched by length (so reordered) and capped in tokens, each value must still be the
    # sentence's own -log p(x), in the order given, and they must add up to evaluate_ppl's total.
    sents = random_sentences(vocab, 20, seed=5)
    torch.manual_seed(0)
    model = LSTMLM(len(vocab), LSTMLMConfig(embed=8, hidden=8)).eval()
    words = [vocab.decode(s) for s in sents]
    got = sentence_nll(model, words, vocab, "cpu", batch_size=4, max_tokens=30)
    with torch.no_grad():
        alone = torch.cat([-model.log_prob(frame([s])) for s in sents]).double()
    assert [len(s) for s in sents] != sorted(len(s) for s in sents)  # the batches do reorder
    torch.testing.assert_close(got, alone, rtol=0, atol=1e-5)
    assert float(got.sum()) == pytest.approx(evaluate_ppl(model, words, vocab, "cpu")["nll"], rel=1e-9)


class _MappedToCuda(torch.Tensor):
    """A tensor as torch.load(map_location="cuda") hands it back, on a machine without CUDA: it
    says it is on the GPU; `.cpu()` gives the plain CPU tensor."""

    @property
    def device(self):
        return torch.device("cuda", 0)

    def cpu(self, *args, **kwargs):
        return self.as_subclass(torch.Tensor).clone()


def test_a_resume_whose_rng_state_was_mapped_to_the_gpu_restores_it_from_the_host(vocab, tmp_path,
                                                                                  monkeypatch):
    # On CUDA the training state is loaded with map_location=device, so the saved RNG states come
    # back as CUDA tensors; torch.set_rng_state takes a CPU ByteTensor (a resume crashed there).
    import lm_eval.lstm_lm as lstm_lm
    cfg = LSTMLMConfig(embed=8, hidden=16, dropout=0.3, batch_size=16, max_epochs=2, seed=5)
    train, valid = ring_corpus(64, 6), ring_corpus(12, 7)
    full, _ = train_lstm_lm(train, valid, vocab, cfg, progress=False)
    train_lstm_lm(train, valid, vocab, LSTMLMConfig(**{**cfg.to_dict(), "max_epochs": 1}),
                  progress=False, ckpt_dir=tmp_path)
    real_load, real_set = lstm_lm.load_tensors, torch.set_rng_state
    seen = []

    def load_mapped(path, map_location="cpu", what=""):
        payload = real_load(path, map_location, what)
        payload["rng"] = {k: v.as_subclass(_MappedToCuda) for k, v in payload["rng"].items()}
        return payload

    def set_rng_state(state):
        seen.append((type(state), state.device.type, state.dtype))
        real_set(state)

    monkeypatch.setattr(lstm_lm, "load_tensors", load_mapped)
    monkeypatch.setattr(torch, "set_rng_state", set_rng_state)
    resumed, _ = train_lstm_lm(train, valid, vocab, cfg, progress=False, ckpt_dir=tmp_path)
    assert seen == [(torch.Tensor, "cpu", torch.uint8)]
    for (k, a), (_, b) in zip(full.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), k
