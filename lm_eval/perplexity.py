"""Forward and reverse perplexity of generated text (PROTOCOL.md §4), for any text generator.

- FPPL: an LM trained on the corpus' training split scores the SAMPLES (fluency). The same LM
  scoring the corpus' test split is the "real data" FPPL of paper Table 2.
- RPPL: an LM trained on the SAMPLES scores the corpus' test split (coverage; a generator that
  collapses onto few modes gets a high RPPL).

LMs: `ngram` (interpolated modified Kneser-Ney, lmplz-equivalent; a degenerate sample set falls
back to fixed discounts instead of failing; for RPPL the corpus' training vocabulary joins the
samples' own with count 0, so unseen test words share the uniform mass instead of one `<unk>`)
or `lstm` (lm_eval/lstm_lm.py; vocabulary of the corpus' training split; for RPPL a held-out
slice of the samples drives early stopping). The forward LSTM LM is cached per corpus and
settings under the textebm cache, since it takes hours on a CPU.
Perplexity = exp(total NLL / scored tokens), `</s>` counted, `<s>` not.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from corpora.preprocess import read_sentences
from corpora.registry import Corpus, cache_dir
from corpora.vocab import Vocab
from lm_eval.lstm_lm import LSTMLMConfig, evaluate_ppl, load_lm, save_lm, train_lstm_lm
from lm_eval.ngram import NGramLM
from common.precision import resolve as resolve_precision


@dataclass
class PPLConfig:
    lm: str = "ngram"           # "ngram" or "lstm"
    order: int = 5              # n-gram order
    heldout: float = 0.1        # share of samples held out for the RPPL LSTM's early stopping
    lstm: LSTMLMConfig = field(default_factory=LSTMLMConfig)

    def __post_init__(self) -> None:
        if self.lm not in ("ngram", "lstm"):
            raise ValueError(f"--lm must be ngram or lstm, got {self.lm!r}")

    def describe(self) -> dict:
        d = {"lm": self.lm}
        d.update({"order": self.order} if self.lm == "ngram" else
                 {"lstm": asdict(self.lstm), "heldout": self.heldout})
        return d


def read_samples(path: str | Path, max_len: int = 400) -> list[list[str]]:
    """Generated sentences, one per line (empty lines skipped), as token lists."""
    return read_sentences(Path(path), "other", max_len)


class SampleFile:
    """The sentences of a text file as token lists (empty lines skipped), read afresh each time
    it is iterated: `evaluate` hands 100,000 samples to the n-gram LMs this way, so that they
    never sit in memory as lists of words. len() counts them (one pass)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __iter__(self):
        with open(self.path, encoding="utf-8") as f:
            for line in f:
                toks = line.split()
                if toks:
                    yield toks

    def __len__(self) -> int:
        with open(self.path, encoding="utf-8") as f:
            return sum(1 for line in f if line.strip())


class _Scorer:
    """A trained LM behind one interface: score(sentences) -> {ppl, tokens, oov}."""

    def __init__(self, kind: str, model, vocab: Vocab | None = None, device="cpu"):
        self.kind, self.model, self.vocab, self.device = kind, model, vocab, device

    def score(self, sentences: list[list[str]]) -> dict:
        if self.kind == "ngram":
            r = self.model.score(sentences)
            return {"ppl": r.ppl, "tokens": r.tokens, "oov": r.oov}
        r = evaluate_ppl(self.model, sentences, self.vocab, self.device)
        return {"ppl": r["ppl"], "tokens": r["tokens"], "oov": r["oov"]}


def _lstm_cache(corpus: Corpus, cfg: PPLConfig, device="cpu") -> Path:
    recipe = asdict(cfg.lstm)
    if recipe["precision"] == "auto":
        # Key by what auto picks here, so an `auto` run finds the LM a `bf16` run cached.
        recipe["precision"] = resolve_precision("auto", torch.device(device))[0]
    if recipe["precision"] == "fp32":
        del recipe["precision"]  # the key of LMs cached before the option existed
    # The corpus by what the LM learns from (the sentences of its training and validation splits
    # as read), not by where the files lie: a corpus moved or reached by another path keeps its LM.
    d = corpus.describe()
    what = {k: d[k] for k in ("name", "train_split", "max_len", "on_long")}
    for split in (corpus.train_split, "valid"):
        h = hashlib.sha1()
        for sent in (corpus.split(split) if corpus.has(split) else []):
            h.update((" ".join(sent) + "\n").encode())
        what[f"{split}_sha1"] = h.hexdigest()
    key = json.dumps({"corpus": what, "lstm": recipe}, sort_keys=True)
    return cache_dir() / "lm" / f"{corpus.name}-lstm-{hashlib.sha1(key.encode()).hexdigest()[:10]}"


def forward_lm(corpus: Corpus, cfg: PPLConfig, device="cpu", progress: bool = True) -> _Scorer:
    """The LM trained on the corpus' training split (the FPPL judge)."""
    if cfg.lm == "ngram":
        return _Scorer("ngram", NGramLM.train(corpus.train, order=cfg.order))
    folder = _lstm_cache(corpus, cfg, device)
    if (folder / "done").is_file():
        model, _, vocab = load_lm(folder, device)
        return _Scorer("lstm", model, vocab, device)
    vocab = Vocab.build(corpus.train)
    model, _ = train_lstm_lm(corpus.train, corpus.split("valid"), vocab, cfg.lstm, device,
                             progress=progress, ckpt_dir=folder)
    save_lm(folder, model, cfg.lstm, vocab)
    (folder / "done").write_text("trained\n")
    return _Scorer("lstm", model, vocab, device)


def reverse_lm(samples: list[list[str]], corpus: Corpus, cfg: PPLConfig, device="cpu",
               progress: bool = True) -> _Scorer:
    """The LM trained on the samples (the RPPL judge)."""
    vocab = Vocab.build(corpus.train)
    if cfg.lm == "ngram":
        return _Scorer("ngram", NGramLM.train(samples, order=cfg.order, vocab=vocab.itos[4:]))
    cut = max(1, int(round(len(samples) * cfg.heldout)))
    if len(samples) < 2 * cut:
        raise ValueError(f"{len(samples)} samples are too few for an LSTM LM; use --lm ngram")
    model, _ = train_lstm_lm(samples[cut:], samples[:cut], vocab, cfg.lstm, device, progress=progress)
    return _Scorer("lstm", model, vocab, device)


def perplexities(samples: list[list[str]], corpus: Corpus, cfg: PPLConfig = PPLConfig(),
                 device="cpu", progress: bool = True) -> dict:
    """FPPL and RPPL of `samples` (token lists, or a SampleFile) against `corpus`, with token
    counts and every setting. The n-gram LMs read the samples as a stream."""
    n = len(samples)  # one pass over a SampleFile
    if not n:
        raise ValueError("no samples to evaluate")
    if cfg.lm == "lstm" and not isinstance(samples, list):
        samples = list(samples)  # the LSTM LM splits and batches them
    test = corpus.split("test")
    fwd = forward_lm(corpus, cfg, device, progress)
    f, real = fwd.score(samples), fwd.score(test)
    r = reverse_lm(samples, corpus, cfg, device, progress).score(test)
    return {"fppl": f["ppl"], "rppl": r["ppl"], "real_fppl": real["ppl"], **cfg.describe(),
            "samples": n,
            "tokens": {"fppl": f["tokens"], "rppl": r["tokens"], "real_fppl": real["tokens"]},
            "oov": {"fppl": f["oov"], "rppl": r["oov"], "real_fppl": real["oov"]},
            "corpus": corpus.describe()}
