"""`textebm corpus info` on bad input: one clear line and a non-zero exit, never a traceback;
the documented behaviour for empty and over-long lines; offline and checksum-failed downloads."""
from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli import app
from corpora import CorpusError, registry
from corpora.registry import PTB_SHA256, load_corpus

from conftest import DATA, need_ptb, need_yahoo

TEXTEBM = Path(sys.executable).parent / "textebm"


@pytest.fixture(autouse=True)
def in_tmp(hermetic, tmp_path, monkeypatch):
    """Every test hermetic (conftest.py), in an empty working folder."""
    monkeypatch.chdir(tmp_path)


def info(*args: str):
    """Run `textebm corpus info ARGS` in-process; return the result after checking that no
    exception escaped the command (a traceback)."""
    result = CliRunner().invoke(app, ["corpus", "info", *args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    return result


def one_line_error(result, code: int = 2) -> str:
    assert result.exit_code == code
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def folder(tmp_path: Path, name: str, **splits: bytes) -> Path:
    d = tmp_path / name
    d.mkdir()
    for split, data in splits.items():
        (d / f"{split}.txt").write_bytes(data)
    return d


# ---------------------------------------------------------------- names and folders

def test_unknown_corpus_name():
    line = one_line_error(info("nosuch"))
    assert "unknown corpus 'nosuch'" in line and "ptb, yahoo, snli, demo" in line


def test_error_text_is_not_read_as_markup():
    assert "'no[bold]such'" in one_line_error(info("no[bold]such"))


def test_missing_data_dir():
    assert "--data-dir /nonexistent: no such folder" in one_line_error(
        info("ptb", "--data-dir", "/nonexistent"))


def test_missing_splits(tmp_path):
    d = folder(tmp_path, "notrain", valid=b"a b\n", test=b"c\n")
    line = one_line_error(info(str(d)))
    assert "train split is missing" in line and str(d / "train.txt") in line
    assert "--train-split valid" in line
    r = info(str(d), "--train-split", "valid", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["train"]["sentences"] == 1

    d = folder(tmp_path, "novalid", train=b"a b\nc\n", test=b"c\n")
    r = info(str(d), "--json")
    st = json.loads(r.stdout)
    assert r.exit_code == 0 and st["valid"] is None and st["train"]["sentences"] == 2
    assert "missing" in info(str(d)).stdout

    assert "--train-split must be one of" in one_line_error(info(str(d), "--train-split", "dev"))


def test_empty_file(tmp_path):
    d = folder(tmp_path, "empty", train=b"", test=b"a\n")
    line = one_line_error(info(str(d)))
    assert "train.txt is empty" in line
    d = folder(tmp_path, "blank", train=b"  \n\n\t\n")
    assert "is empty" in one_line_error(info(str(d)))


def test_non_utf8_bytes(tmp_path):
    d = folder(tmp_path, "latin", train="caf\xe9 ok\n".encode("latin-1"))
    line = one_line_error(info(str(d)))
    assert "not UTF-8" in line and "offset 3" in line and "iconv" in line


def test_empty_lines_skipped_and_counted(tmp_path):
    d = folder(tmp_path, "gaps", train=b"a b\n\n   \nc d e\n\n")
    st = json.loads(info(str(d), "--json").stdout)["train"]
    assert st["sentences"] == 2 and st["tokens"] == 5
    r = info(str(d))
    assert r.exit_code == 0 and "'empty': 3" in r.stdout and "'lines': 5" in r.stdout


def test_very_long_line_dropped_or_cut(tmp_path):
    long = " ".join(f"w{i}" for i in range(10_000)).encode()
    d = folder(tmp_path, "long", train=b"a b c\n" + long + b"\nd e\n")
    st = json.loads(info(str(d), "--json").stdout)["train"]
    assert st["sentences"] == 2 and st["max_len"] == 3  # dropped by default
    assert "'long_dropped': 1" in info(str(d)).stdout

    st = json.loads(info(str(d), "--on-long", "cut", "--json").stdout)["train"]
    assert st["sentences"] == 3 and st["max_len"] == 400 and st["tokens"] == 405
    st = json.loads(info(str(d), "--on-long", "cut", "--max-len", "50", "--json").stdout)["train"]
    assert st["max_len"] == 50
    assert "on_long must be 'drop' or 'cut'" in one_line_error(info(str(d), "--on-long", "keep"))

    only_long = folder(tmp_path, "onlylong", train=long + b"\n")
    assert "no usable sentences" in one_line_error(info(str(only_long)))


def test_single_small_file(tmp_path):
    f = tmp_path / "few.txt"
    f.write_text("a b\nc\n")
    st = json.loads(info(str(f), "--json").stdout)
    assert st["train"]["sentences"] == 2 and st["valid"] is None and st["test"] is None


def test_installed_entry_point_prints_no_traceback(tmp_path):
    if not TEXTEBM.is_file():
        pytest.skip("textebm script not installed next to this python")
    r = subprocess.run([str(TEXTEBM), "corpus", "info", "nosuch"], capture_output=True, text=True,
                       timeout=60, env={**os.environ, "TEXTEBM_CACHE": str(tmp_path / "cache")})
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().startswith("error: unknown corpus 'nosuch'")
    assert len(r.stderr.strip().splitlines()) == 1


# ---------------------------------------------------------------- real corpora

@need_ptb
def test_ptb_info_json():
    r = info("ptb", "--data-dir", str(DATA), "--json")
    assert r.exit_code == 0
    st = json.loads(r.stdout)
    assert list(st) == ["train", "valid", "test"]
    keys = ["sentences", "tokens", "vocab_size", "avg_len", "max_len", "oov_rate"]
    assert all(list(s) == keys for s in st.values())
    assert [st[s]["sentences"] for s in st] == [42_068, 3_370, 3_761]
    assert st["train"]["tokens"] == 887_521 and st["train"]["vocab_size"] == 9_999
    assert st["train"]["avg_len"] == 21.097 and st["train"]["max_len"] == 82
    assert all(s["oov_rate"] == 0.0 for s in st.values())  # PTB's vocabulary is closed
    table = info("ptb", "--data-dir", str(DATA)).stdout
    assert "42,068" in table and "887,521" in table


@need_yahoo
def test_yahoo_needs_train_split_valid():
    line = one_line_error(info("yahoo", "--data-dir", str(DATA)))
    assert "yahoo.train.txt" in line and "--train-split valid" in line
    st = json.loads(info("yahoo", "--data-dir", str(DATA), "--train-split", "valid", "--json").stdout)
    assert st["train"] == st["valid"] and st["train"]["sentences"] == 10_000


# ---------------------------------------------------------------- subword statistics

def test_info_over_spm_pieces():
    words = json.loads(info("demo", "--json").stdout)
    r = info("demo", "--tokenizer", "spm", "--vocab-size", "300", "--json")
    assert r.exit_code == 0, r.stderr
    pieces = json.loads(r.stdout)
    for s in ("train", "valid", "test"):
        assert pieces[s]["sentences"] == words[s]["sentences"]
        assert pieces[s]["tokens"] >= words[s]["tokens"]
        assert pieces[s]["vocab_size"] <= 300
    table = info("demo", "--tokenizer", "spm", "--vocab-size", "300").stdout
    assert "300 spm pieces" in " ".join(table.split())  # the title may wrap
    assert "--tokenizer must be word or spm" in one_line_error(info("demo", "--tokenizer", "bpe"))


def test_spm_vocab_too_large_is_one_line(tmp_path):
    d = folder(tmp_path, "tiny", train=b"a b\nc\n")
    line = one_line_error(info(str(d), "--tokenizer", "spm", "--vocab-size", "100"))
    assert "Vocabulary size too high" in line


# ---------------------------------------------------------------- downloads

def test_offline_is_fast_and_says_where_to_put_files(tmp_path):
    cache = tmp_path / "cache"
    with pytest.raises(CorpusError) as e:
        load_corpus("ptb")
    msg = str(e.value)
    assert "offline" in msg and str(cache / "ptb") in msg
    assert all(f"ptb.{s}.txt" in msg for s in ("train", "valid", "test"))
    assert "--data-dir" in msg and "TEXTEBM_DATA" in msg
    line = one_line_error(info("ptb"))
    assert str(cache / "ptb") in line
    # Yahoo has no canonical download at all.
    assert "no canonical download" in str(pytest.raises(CorpusError, load_corpus, "yahoo").value)


def test_offline_with_the_real_network_probe(tmp_path, monkeypatch):
    """This machine cannot reach GitHub: the real probe must give up quickly (~15 s at most)."""
    monkeypatch.undo()
    monkeypatch.delenv("TEXTEBM_DATA", raising=False)
    monkeypatch.setenv("TEXTEBM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: (_ for _ in ()).throw(
        OSError("network disabled in tests")))  # if GitHub were reachable, still no download
    t0 = time.monotonic()
    with pytest.raises(CorpusError) as e:
        load_corpus("ptb")
    assert time.monotonic() - t0 < 15
    msg = str(e.value)
    assert str(tmp_path / "cache" / "ptb") in msg and "ptb.train.txt" in msg
    assert not list((tmp_path / "cache").rglob("*.txt"))


class FakeResponse(io.BytesIO):
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def fake_urlopen(bodies: dict[str, bytes]):
    def urlopen(url, timeout=None):
        return FakeResponse(bodies[url.rsplit("/", 1)[-1]])
    return urlopen


def test_download_with_wrong_checksum_is_not_used(tmp_path, monkeypatch):
    dest = tmp_path / "cache" / "ptb"
    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen(
        {f"ptb.{s}.txt": b" not the real ptb \n" for s in PTB_SHA256}))
    with pytest.raises(CorpusError, match="does not match its sha256"):
        registry._download_ptb(dest)
    assert list(dest.iterdir()) == []
    # Through load_corpus, with the network "up": the same error, nothing left in the cache.
    monkeypatch.setattr(registry, "_online", lambda host: True)
    with pytest.raises(CorpusError, match="ptb.train.txt does not match its sha256"):
        load_corpus("ptb")
    assert list(dest.iterdir()) == []


@need_ptb
def test_download_all_or_nothing_and_verified(tmp_path, monkeypatch):
    real = {f"ptb.{s}.txt": (DATA / "ptb" / f"ptb.{s}.txt").read_bytes() for s in PTB_SHA256}
    dest = tmp_path / "cache" / "ptb"
    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen({**real, "ptb.test.txt": b"bad\n"}))
    with pytest.raises(CorpusError, match="ptb.test.txt does not match"):
        registry._download_ptb(dest)
    assert list(dest.iterdir()) == []  # the two good files are not kept without the third

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen(real))
    monkeypatch.setattr(registry, "_online", lambda host: True)
    c = load_corpus("ptb")
    assert c.source == f"download: {dest}" and len(c.split("valid")) == 3_370
    assert sorted(p.name for p in dest.iterdir()) == ["ptb.test.txt", "ptb.train.txt", "ptb.valid.txt"]
    assert all(hashlib.sha256((dest / f"ptb.{s}.txt").read_bytes()).hexdigest() == h
               for s, h in PTB_SHA256.items())
    # Next time the cache is used, without the network.
    monkeypatch.setattr(registry, "_online", lambda host: False)
    assert load_corpus("ptb").source == f"cache: {dest}"
