"""Vocab: word <-> id maps built from a training split, saved as a plain text file.

Ids 0..3 are always the specials `<pad>`, `<unk>`, `<s>`, `</s>`; the rest follow in order of
decreasing training frequency (ties broken alphabetically, so a build is deterministic).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<s>", "</s>"
SPECIALS = (PAD, UNK, BOS, EOS)
PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3


@dataclass
class Vocab:
    itos: list[str]
    stoi: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if tuple(self.itos[:4]) != SPECIALS:
            raise ValueError(f"a vocabulary must start with {SPECIALS}, got {self.itos[:4]}")
        self.stoi = {w: i for i, w in enumerate(self.itos)}
        if len(self.stoi) != len(self.itos):
            raise ValueError("duplicate word in vocabulary")

    @classmethod
    def build(cls, sentences: Iterable[Sequence[str]], max_size: int | None = None,
              min_count: int = 1) -> "Vocab":
        """Frequency-ordered vocabulary; `max_size` counts the four specials."""
        counts = Counter(w for s in sentences for w in s)
        for sp in SPECIALS:
            counts.pop(sp, None)
        words = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
        if max_size is not None:
            words = words[: max(0, max_size - len(SPECIALS))]
        return cls(list(SPECIALS) + words)

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, word: str) -> bool:
        return word in self.stoi

    def encode(self, tokens: Sequence[str]) -> list[int]:
        """Word ids of `tokens` (no framing); unknown words map to `<unk>`."""
        get = self.stoi.get
        return [get(w, UNK_ID) for w in tokens]

    def decode(self, ids: Iterable[int], strip: bool = True) -> list[str]:
        """Words of `ids`; with `strip`, stops at `</s>` and drops `<s>`/`<pad>`."""
        out = []
        for i in ids:
            i = int(i)
            if strip and i == EOS_ID:
                break
            if strip and i in (PAD_ID, BOS_ID):
                continue
            out.append(self.itos[i])
        return out

    def count_unk(self, tokens: Sequence[str]) -> int:
        return sum(1 for w in tokens if w not in self.stoi or w == UNK)

    def save(self, path: str | Path) -> None:
        Path(path).write_text("\n".join(self.itos) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> "Vocab":
        lines = Path(path).read_text(encoding="utf-8").split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        return cls(lines)
