"""Shared test settings and fixtures.

The real corpora are read from $TEXTEBM_DATA or ../shared/data (never copied into the repo); the
`need_*` marks skip a test where that folder lacks the corpus. `demo` is the offline synthetic
corpus, read once per session. `hermetic` hides the user's data folder and cache and the network.
"""
import os
from pathlib import Path

import pytest
import torch

from corpora import registry
from corpora.registry import load_corpus

# Tests use tiny models, where thread start-up costs more than it saves; one thread also keeps
# results bit-for-bit repeatable.
torch.set_num_threads(1)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

# Absolute: several tests change the working folder, and the README passes a relative path.
DATA = Path(os.environ.get("TEXTEBM_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data").resolve()
need_ptb = pytest.mark.skipif(not (DATA / "ptb" / "ptb.train.txt").is_file(), reason=f"no PTB in {DATA}")
need_yahoo = pytest.mark.skipif(not (DATA / "yahoo" / "yahoo.valid.txt").is_file(),
                                reason=f"no Yahoo in {DATA}")
need_snli = pytest.mark.skipif(not (DATA / "snli" / "test.txt").is_file(), reason=f"no SNLI in {DATA}")


@pytest.fixture
def hermetic(tmp_path, monkeypatch):
    """An empty cache, no $TEXTEBM_DATA, no network (tests that want the network say so)."""
    monkeypatch.delenv("TEXTEBM_DATA", raising=False)
    monkeypatch.setenv("TEXTEBM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(registry, "_online", lambda host: False)


@pytest.fixture(scope="session")
def demo():
    """The offline demo corpus (corpora/demo.py), generated once."""
    return load_corpus("demo")
