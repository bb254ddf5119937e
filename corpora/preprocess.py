"""Per-corpus text normalisation (PROTOCOL.md section 5) and robust line reading.

- ptb:   as it is; its literal `<unk>` is the unknown word.
- yahoo: `_UNK` -> `<unk>`.
- snli:  lowercased, tokenized, at most 15 tokens (longer sentences dropped, as in ARAE's data).
- other: whitespace tokens as they are.

Empty lines are skipped and counted. Lines longer than `max_len` tokens are dropped (default) or
cut to `max_len` (`on_long="cut"`), and counted, so one runaway line cannot exhaust memory.
"""
from __future__ import annotations

import io
import re
from dataclasses import dataclass
from pathlib import Path

from corpora import CorpusError

SNLI_MAX_LEN = 15
_SNLI_TOKEN = re.compile(r"\w+(?:[-']\w+)*|[^\w\s]")


@dataclass
class ReadStats:
    lines: int = 0
    empty: int = 0
    long_dropped: int = 0
    long_cut: int = 0

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def snli_tokenize(text: str) -> list[str]:
    """Lowercase and split words from punctuation (for raw SNLI text from the hub)."""
    return _SNLI_TOKEN.findall(text.lower())


def normalise(tokens: list[str], corpus: str) -> list[str]:
    if corpus == "yahoo":
        return ["<unk>" if w == "_UNK" else w for w in tokens]
    if corpus == "snli":
        return [w.lower() for w in tokens]
    return tokens


def read_text(path: Path) -> str:
    """A UTF-8 text file's text; a clear error for a missing, empty or non-UTF-8 file."""
    if not path.is_file():
        raise CorpusError(f"missing file: {path}")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")  # a leading byte-order mark is not part of the first word
    except UnicodeDecodeError as e:
        raise CorpusError(f"{path} is not UTF-8 text (bad byte at offset {e.start}); "
                          "convert it, e.g. with iconv -f latin1 -t utf-8") from None
    del data
    if not text.strip():
        raise CorpusError(f"{path} is empty: it holds no sentences")
    return text


def read_lines(path: Path) -> list[str]:
    """Lines of a UTF-8 text file; a clear error for a missing, empty or non-UTF-8 file."""
    return read_text(path).splitlines()


def read_sentences(path: Path, corpus: str, max_len: int, on_long: str = "drop",
                   stats: ReadStats | None = None) -> list[list[str]]:
    """Token lists of `path`, normalised for `corpus`, with empty and over-long lines handled."""
    if on_long not in ("drop", "cut"):
        raise CorpusError(f"on_long must be 'drop' or 'cut', got {on_long!r}")
    stats = stats if stats is not None else ReadStats()
    limit = min(max_len, SNLI_MAX_LEN) if corpus == "snli" else max_len
    out = []
    words: dict[str, str] = {}   # one string object per word type, shared by every sentence
    for line in io.StringIO(read_text(path), newline=None):  # line by line, any line ending
        stats.lines += 1
        # At most limit + 1 pieces: an over-long line (even a million tokens) is never split
        # into a list of all its words; its last piece is the unsplit rest.
        toks = line.split(maxsplit=limit)
        if not toks:
            stats.empty += 1
            continue
        if len(toks) > limit:
            if on_long == "drop" or corpus == "snli":
                stats.long_dropped += 1
                continue
            stats.long_cut += 1
            toks = toks[:limit]
        out.append([words.setdefault(w, w) for w in normalise(toks, corpus)])
    if not out:
        raise CorpusError(f"{path} has no usable sentences ({stats.empty} empty, "
                          f"{stats.long_dropped} longer than {limit} tokens)")
    return out
