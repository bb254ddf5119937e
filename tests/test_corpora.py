"""Corpora: standard counts of the real corpora, normalisation, Vocab, Batches, the registry's
search order, custom folders and files, and the optional sentencepiece tokenizer.

The real corpora are read from $TEXTEBM_DATA or ../shared/data (never copied into the repo);
tests that need them are skipped where that folder is absent.
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from corpora import CorpusError
from corpora.batching import Batches, epoch_order, frame, scored_tokens
from corpora.preprocess import ReadStats, read_sentences
from corpora.registry import load_corpus
from corpora.stats import corpus_stats
from corpora.subword import SubwordTokenizer
from corpora.vocab import BOS_ID, EOS_ID, PAD_ID, SPECIALS, UNK, UNK_ID, Vocab

from conftest import DATA, need_ptb, need_snli, need_yahoo

# No test sees the user's $TEXTEBM_DATA or cache, and none touches the network.
pytestmark = pytest.mark.usefixtures("hermetic")


@pytest.fixture(scope="module")
def ptb():
    if not (DATA / "ptb" / "ptb.train.txt").is_file():
        pytest.skip(f"no PTB in {DATA}")
    return load_corpus("ptb", data_dir=DATA)


@pytest.fixture(scope="module")
def ptb_ids(ptb):
    vocab = Vocab.build(ptb.train)
    return vocab, [vocab.encode(s) for s in ptb.train]


def write(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(l + "\n" for l in lines), encoding="utf-8")
    return path


# ---------------------------------------------------------------- the standard corpora

@need_ptb
def test_ptb_standard_counts(ptb):
    assert [len(ptb.split(s)) for s in ("train", "valid", "test")] == [42_068, 3_370, 3_761]
    types = {w for s in ptb.train for w in s}
    assert len(types) == 9_999 and "<unk>" in types and "N" in types  # 10k vocabulary with <unk>
    assert all(ptb.stats[s].empty == ptb.stats[s].long_dropped == 0 for s in ptb.stats)
    assert ptb.source.startswith("--data-dir")
    vocab = Vocab.build(ptb.train)
    assert len(vocab) == 9_998 + len(SPECIALS)  # <unk> is the special, not a second entry
    assert all(w in vocab for s in ptb.split("test") for w in s)  # closed vocabulary


@need_ptb
def test_ptb_stats_values(ptb):
    st = corpus_stats(ptb)
    assert st["train"] == {"sentences": 42_068, "tokens": 887_521, "vocab_size": 9_999,
                           "avg_len": 21.097, "max_len": 82, "oov_rate": 0.0}
    assert st["valid"]["sentences"] == 3_370 and st["test"]["oov_rate"] == 0.0


@need_yahoo
def test_yahoo_unk_mapped_and_missing_train():
    corpus = load_corpus("yahoo", data_dir=DATA)
    with pytest.raises(CorpusError) as e:
        corpus.train
    msg = str(e.value)
    assert "yahoo.train.txt" in msg and str(DATA / "yahoo") in msg and "--train-split valid" in msg
    assert "\n" not in msg

    corpus = load_corpus("yahoo", data_dir=DATA, train_split="valid")
    train = corpus.train
    assert len(train) == 10_000 and train is corpus.split("valid")
    raw_unk = (DATA / "yahoo" / "yahoo.valid.txt").read_text(encoding="utf-8").split().count("_UNK")
    counts = Counter(w for s in train for w in s)
    assert counts["_UNK"] == 0 and counts["<unk>"] == raw_unk > 0
    assert 78 < sum(counts.values()) / len(train) < 80  # about 79 tokens per document
    assert corpus_stats(corpus)["train"] == corpus_stats(corpus)["valid"]


@need_snli
def test_snli_test_short_and_lowercase():
    corpus = load_corpus("snli", data_dir=DATA, train_split="test")
    test = corpus.split("test")
    assert len(test) == 11_647
    assert max(len(s) for s in test) <= 15
    assert all(w == w.lower() for s in test for w in s)
    with pytest.raises(CorpusError, match="--train-split test"):  # only test exists here
        load_corpus("snli", data_dir=DATA).train


def test_normalisation_per_corpus(tmp_path):
    f = write(tmp_path / "x.txt", ["The _UNK Cat", "A " + " ".join(["w"] * 16), "Short ONE ."])
    assert read_sentences(f, "yahoo", 400) == [["The", "<unk>", "Cat"], ["A"] + ["w"] * 16,
                                               ["Short", "ONE", "."]]
    st = ReadStats()
    # SNLI: lowercased; longer than 15 tokens is dropped even when asked to cut.
    assert read_sentences(f, "snli", 400, "cut", st) == [["the", "_unk", "cat"], ["short", "one", "."]]
    assert st.long_dropped == 1 and st.long_cut == 0
    assert read_sentences(f, "ptb", 400)[0] == ["The", "_UNK", "Cat"]  # PTB as it is


def test_byte_order_mark_is_not_a_word(tmp_path):
    f = tmp_path / "bom.txt"
    f.write_bytes("\ufeffhello world\n".encode("utf-8"))
    assert read_sentences(f, "other", 400) == [["hello", "world"]]


# ---------------------------------------------------------------- Vocab

def test_vocab_build_order_limits_and_round_trip(tmp_path):
    sents = [["b", "a", "c", "a"], ["a", "b", "d", "<unk>"], ["e", "<s>"]]
    v = Vocab.build(sents)
    assert v.itos[:4] == list(SPECIALS) and [v.stoi[w] for w in SPECIALS] == [0, 1, 2, 3]
    assert v.itos[4:] == ["a", "b", "c", "d", "e"]  # a:3, b:2, then ties alphabetically
    assert Vocab.build(sents, max_size=6).itos[4:] == ["a", "b"]  # max_size counts specials
    assert Vocab.build(sents, min_count=2).itos[4:] == ["a", "b"]
    assert Vocab.build(sents, max_size=2).itos == list(SPECIALS)

    path = tmp_path / "vocab.txt"
    v.save(path)
    assert Vocab.load(path).itos == v.itos

    ids = v.encode(["a", "zebra", "e", "<unk>"])
    assert ids == [4, UNK_ID, 8, UNK_ID]
    assert v.decode(ids) == ["a", UNK, "e", UNK]
    assert v.decode([BOS_ID, 4, 5, EOS_ID, 6, PAD_ID]) == ["a", "b"]  # stops at </s>
    assert v.decode([BOS_ID, 4, EOS_ID], strip=False) == ["<s>", "a", "</s>"]
    with pytest.raises(ValueError):
        Vocab(["a", "b", "c", "d"])


@need_ptb
def test_vocab_round_trip_on_ptb(ptb, ptb_ids, tmp_path):
    vocab, _ = ptb_ids
    vocab.save(tmp_path / "v.txt")
    loaded = Vocab.load(tmp_path / "v.txt")
    assert loaded.itos == vocab.itos
    assert all(loaded.decode(loaded.encode(s)) == s for s in ptb.split("valid"))


# ---------------------------------------------------------------- Batches

def test_batches_cover_each_sentence_once_and_frame_it():
    rng = np.random.default_rng(0)
    data = [list(rng.integers(4, 50, size=n)) for n in rng.integers(1, 30, size=203)]
    b = Batches(data, 16, seed=3)
    assert len(b) == 13
    seen = []
    for ix, x in zip(b.indices(0), b.epoch(0)):
        seen.extend(ix.tolist())
        longest = max(len(data[i]) for i in ix)
        assert x.shape == (len(ix), longest + 2) and x.dtype.is_floating_point is False
        for row, i in zip(x.tolist(), ix):
            n = len(data[i])
            assert row[0] == BOS_ID and row[1:n + 1] == data[i] and row[n + 1] == EOS_ID
            assert row[n + 2:] == [PAD_ID] * (longest - n)
        assert scored_tokens(x).tolist() == [len(data[i]) + 1 for i in ix]
    assert sorted(seen) == list(range(len(data)))  # every sentence exactly once


def test_batch_order_deterministic_per_seed_and_epoch():
    lengths = list(np.random.default_rng(1).integers(1, 40, size=500))
    same = lambda a, c: all(np.array_equal(x, y) for x, y in zip(a, c))
    e0 = epoch_order(lengths, 32, seed=7, epoch=0)
    assert same(e0, epoch_order(lengths, 32, seed=7, epoch=0))
    assert not same(e0, epoch_order(lengths, 32, seed=7, epoch=1))
    assert not same(e0, epoch_order(lengths, 32, seed=8, epoch=0))
    for epoch in (0, 1):
        ix = np.concatenate(epoch_order(lengths, 32, seed=7, epoch=epoch))
        assert sorted(ix.tolist()) == list(range(500))


def test_frame_pads_after_end():
    x = frame([[5, 6, 7], [8]])
    assert x.tolist() == [[BOS_ID, 5, 6, 7, EOS_ID], [BOS_ID, 8, EOS_ID, PAD_ID, PAD_ID]]


@need_ptb
def test_bucketing_keeps_padding_small_on_ptb(ptb_ids):
    _, ids = ptb_ids
    bucketed = Batches(ids, 32, seed=0).padding_fraction(0)
    plain = Batches(ids, 32, seed=0, bucket=False).padding_fraction(0)
    assert bucketed < 0.10  # measured: 0.0013
    assert plain > 0.40 and plain > 20 * bucketed  # measured: 0.53


# ---------------------------------------------------------------- registry

def tiny_ptb(base: Path, word: str) -> Path:
    for split in ("train", "valid", "test"):
        write(base / "ptb" / f"ptb.{split}.txt", [f" {word} {split} "])
    return base


def test_registry_order_data_dir_env_cache(tmp_path, monkeypatch):
    a, b = tiny_ptb(tmp_path / "a", "from_a"), tiny_ptb(tmp_path / "b", "from_b")
    tiny_ptb(tmp_path / "cache", "from_cache")  # TEXTEBM_CACHE (set by the fixture)
    monkeypatch.setenv("TEXTEBM_DATA", str(b))
    c = load_corpus("ptb", data_dir=a)
    assert c.train == [["from_a", "train"]] and c.source == f"--data-dir: {a / 'ptb'}"
    c = load_corpus("ptb")
    assert c.train == [["from_b", "train"]] and c.source.startswith("TEXTEBM_DATA")
    monkeypatch.delenv("TEXTEBM_DATA")
    c = load_corpus("ptb")
    assert c.train == [["from_cache", "train"]] and c.source.startswith("cache")
    # --data-dir may also point straight at the corpus folder.
    assert load_corpus("ptb", data_dir=a / "ptb").split("valid") == [["from_a", "valid"]]
    with pytest.raises(CorpusError, match="no such folder"):
        load_corpus("ptb", data_dir=tmp_path / "nowhere")


def test_custom_folder_both_namings(tmp_path):
    plain = tmp_path / "mine"
    for split in ("train", "valid", "test"):
        write(plain / f"{split}.txt", [f"{split} one", "", f"{split} two"])
    c = load_corpus(str(plain))
    assert c.name == "mine" and c.split("test") == [["test", "one"], ["test", "two"]]
    assert c.stats["test"].empty == 1

    named = tmp_path / "news"
    write(named / "news.train.txt", ["a b", "c"])
    write(named / "news.valid.txt", ["d"])
    c = load_corpus(str(named))
    assert c.train == [["a", "b"], ["c"]] and c.split("valid") == [["d"]]
    assert not c.has("test")
    with pytest.raises(CorpusError, match="test split is missing"):
        c.split("test")
    assert corpus_stats(c)["test"] is None

    (tmp_path / "empty").mkdir()
    with pytest.raises(CorpusError, match="none of train.txt"):
        load_corpus(str(tmp_path / "empty"))


def test_single_file_split_18_1_1(tmp_path):
    f = write(tmp_path / "lines.txt", [f"s{i}" for i in range(100)])
    c = load_corpus(str(f))
    assert c.name == "lines"
    ids = {s: [int(x[0][1:]) for x in c.split(s)] for s in ("train", "valid", "test")}
    assert ids["valid"] == [18, 38, 58, 78, 98] and ids["test"] == [19, 39, 59, 79, 99]
    assert len(ids["train"]) == 90
    assert sorted(ids["train"] + ids["valid"] + ids["test"]) == list(range(100))

    # Fewer than 19 sentences: valid and test are missing, not empty (stats do not divide by 0).
    c = load_corpus(str(write(tmp_path / "few.txt", ["a b", "c"])))
    st = corpus_stats(c)
    assert st["train"]["sentences"] == 2 and st["valid"] is None and st["test"] is None


def test_unknown_name():
    with pytest.raises(CorpusError, match="unknown corpus 'nosuch'"):
        load_corpus("nosuch")


def test_demo_corpus_loads():
    c = load_corpus("demo")
    assert [len(c.split(s)) for s in ("train", "valid", "test")] == [10_000, 1_000, 1_000]


# ---------------------------------------------------------------- subword (sentencepiece)

@pytest.fixture(scope="module")
def spm_model(ptb, tmp_path_factory):
    return SubwordTokenizer.train(ptb.train[:3000], 1000, tmp_path_factory.mktemp("spm") / "ptb")


@need_ptb
def test_subword_vocab_size_and_round_trip(spm_model, ptb):
    assert len(spm_model) == 1000 == len(spm_model.pieces())
    assert spm_model.model_path.is_file() and spm_model.model_path.name == "ptb.model"
    for s in ptb.split("valid"):
        pieces = spm_model.encode(s)
        assert spm_model.decode(pieces) == s
        assert sum(p.startswith("▁") for p in pieces) == len(s)  # no piece crosses a word
    assert "<unk>" in spm_model.pieces()
    assert spm_model.encode(["<unk>"]) == ["▁", "<unk>"]
    assert spm_model.decode(spm_model.encode(["naïve", "façade"])) == ["naïve", "façade"]
    assert spm_model.encode([]) == [] and spm_model.decode([]) == []
    loaded = SubwordTokenizer.load(spm_model.model_path)
    assert loaded.encode(ptb.split("test")[0]) == spm_model.encode(ptb.split("test")[0])


@need_ptb
def test_subword_training_deterministic_and_quiet(ptb, tmp_path, capfd):
    sents = ptb.train[:800]
    a = SubwordTokenizer.train(sents, 400, tmp_path / "a" / "m")
    b = SubwordTokenizer.train(iter(sents), 400, tmp_path / "b" / "m")
    assert a.pieces() == b.pieces()
    assert [a.sp.get_score(i) for i in range(len(a))] == [b.sp.get_score(i) for i in range(len(b))]
    captured = capfd.readouterr()
    assert captured.err == "" and captured.out == ""


def test_subword_errors(tmp_path):
    with pytest.raises(CorpusError, match="Vocabulary size too high"):
        SubwordTokenizer.train([["a", "b"]], 1000, tmp_path / "m")
    with pytest.raises(CorpusError, match="missing sentencepiece model"):
        SubwordTokenizer.load(tmp_path / "none.model")


def test_by_length_caps_tokens_per_batch_and_visits_every_item_once():
    from corpora.batching import by_length
    rng = np.random.default_rng(0)
    data = [[5] * int(n) for n in rng.integers(1, 300, size=500)]
    batches = list(by_length(data, batch_size=64, max_tokens=2000))
    seen = np.concatenate(batches)
    assert sorted(seen.tolist()) == list(range(500))
    for b in batches:
        width = max(len(data[i]) + 1 for i in b)
        assert len(b) <= 64 and (len(b) == 1 or len(b) * width <= 2000)
    # Without the cap: fixed-size batches in length order.
    plain = list(by_length(data, 64))
    assert [len(b) for b in plain] == [64] * 7 + [500 - 7 * 64]


def test_describe_records_no_absolute_path(tmp_path):
    # Results files record a corpus by name and its files by name: never the machine's paths.
    (tmp_path / "mine").mkdir()
    for split in ("train", "valid", "test"):
        (tmp_path / "mine" / f"{split}.txt").write_text("a b c\nd e\n")
    d = load_corpus(str(tmp_path / "mine")).describe()
    text = json.dumps(d)
    assert str(tmp_path) not in text and d["files"]["train"] == "train.txt"
    # A single file keeps its name and how it was split (the note once swallowed the name).
    (tmp_path / "notes.txt").write_text("".join(f"w{i} x\n" for i in range(40)))
    d = load_corpus(str(tmp_path / "notes.txt")).describe()
    assert d["source"] == "file: notes.txt (split 18/1/1 by sentence number)"
