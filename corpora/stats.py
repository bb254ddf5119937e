"""Per-split statistics of a corpus (`textebm corpus info`)."""
from __future__ import annotations

from typing import Callable

from corpora.registry import SPLITS, Corpus
from corpora.vocab import Vocab


def split_stats(sentences: list[list[str]], vocab: Vocab) -> dict:
    """Counts for one split; tokens exclude `<s>`/`</s>`; OOV is against `vocab`."""
    lens = [len(s) for s in sentences]
    tokens = sum(lens)
    if not tokens:
        return {"sentences": len(sentences), "tokens": 0, "vocab_size": 0, "avg_len": 0.0,
                "max_len": 0, "oov_rate": 0.0}
    oov = sum(vocab.count_unk(s) for s in sentences) - sum(s.count("<unk>") for s in sentences)
    return {"sentences": len(sentences), "tokens": tokens,
            "vocab_size": len({w for s in sentences for w in s}),
            "avg_len": round(tokens / len(sentences), 3), "max_len": max(lens),
            "oov_rate": round(oov / tokens, 6)}


def corpus_stats(corpus: Corpus, tokenize: Callable[[list[str]], list[str]] | None = None) -> dict:
    """{split: stats or None if missing}; the vocabulary comes from the training split.

    `oov_rate` counts tokens outside the training vocabulary; a literal `<unk>` already in the
    text (PTB, Yahoo) is in the vocabulary and is not counted again. With `tokenize` (e.g.
    `SubwordTokenizer.encode`) every count is over its output (pieces) instead of words.
    """
    def split(s: str) -> list[list[str]]:
        sents = corpus.split(s)
        return [tokenize(x) for x in sents] if tokenize else sents

    train = split("train")
    vocab = Vocab.build(train)
    out = {}
    for s in SPLITS:
        has = corpus.has(corpus.train_split if s == "train" else s)
        out[s] = split_stats(train if s == "train" else split(s), vocab) if has else None
    return out
