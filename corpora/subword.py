"""Optional subword tokenization: a sentencepiece model over already tokenized sentences.

Words in, pieces out, words back: `decode(encode(words)) == words` for every word made of
characters seen in training (an unseen character comes back as itself). Pieces never cross a
word boundary (a piece that starts a word carries the `▁` mark), the text is not normalised
(identity rule), and a literal `<unk>` in the corpus (PTB, Yahoo) stays whole (`▁`, `<unk>`), so
a `Vocab` built over pieces maps it to its own `<unk>`.
The piece vocabulary holds exactly `vocab_size` pieces: sentencepiece's own unknown piece
(`<spm_unk>`, for characters never seen in training), `<unk>`, and the learned pieces; framing
(`<s>`, `</s>`, padding) is left to `Vocab` and `batching`, as for words.

Training reads the sentences from memory (no temporary text file), runs on one thread so the
model is the same on every machine, and keeps sentencepiece's log off stderr.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

import sentencepiece as spm

from corpora import CorpusError

SPM_UNK = "<spm_unk>"
WORD_UNK = "<unk>"


class SubwordTokenizer:
    """A trained sentencepiece model, used as words -> pieces -> words."""

    def __init__(self, processor: spm.SentencePieceProcessor, model_path: Path):
        self.sp = processor
        self.model_path = Path(model_path)

    @classmethod
    def train(cls, sentences: Iterable[Sequence[str]], vocab_size: int, model_prefix: Path,
              model_type: str = "unigram") -> "SubwordTokenizer":
        """Learn `vocab_size` pieces from token lists; writes `model_prefix`.model and .vocab."""
        model_prefix = Path(model_prefix)
        model_prefix.parent.mkdir(parents=True, exist_ok=True)
        try:
            spm.SentencePieceTrainer.Train(
                sentence_iterator=(" ".join(s) for s in sentences),
                model_prefix=str(model_prefix), vocab_size=vocab_size, model_type=model_type,
                character_coverage=1.0,            # every character seen keeps a piece
                normalization_rule_name="identity",  # words come back exactly as they went in
                unk_piece=SPM_UNK, user_defined_symbols=[WORD_UNK],
                pad_id=-1, bos_id=-1, eos_id=-1,   # framing is Vocab's job
                num_threads=1,                     # the same model everywhere (EM sums in order)
                minloglevel=2)                     # quiet: only errors
        except RuntimeError as e:  # e.g. "Vocabulary size too high": the user's data or option
            why = str(e).strip().splitlines()[-1]
            why = why.split("] ", 1)[-1]  # drop sentencepiece's source location
            raise CorpusError(f"sentencepiece could not train a {vocab_size}-piece model: {why}"
                              ) from None
        return cls.load(model_prefix.with_name(model_prefix.name + ".model"))

    @classmethod
    def load(cls, model_path: str | Path) -> "SubwordTokenizer":
        model_path = Path(model_path)
        if not model_path.is_file():
            raise CorpusError(f"missing sentencepiece model: {model_path}")
        return cls(spm.SentencePieceProcessor(model_file=str(model_path)), model_path)

    def __len__(self) -> int:
        """Number of pieces (= the `vocab_size` it was trained with)."""
        return self.sp.get_piece_size()

    def pieces(self) -> list[str]:
        """All pieces, in id order."""
        return [self.sp.id_to_piece(i) for i in range(len(self))]

    def encode(self, tokens: Sequence[str]) -> list[str]:
        """Pieces of a token list, e.g. ['the', 'bankers'] -> ['▁the', '▁bank', 'ers']."""
        return self.sp.encode(" ".join(tokens), out_type=str) if tokens else []

    def decode(self, pieces: Sequence[str]) -> list[str]:
        """Words of a piece list (the inverse of `encode`)."""
        return self.sp.decode_pieces(list(pieces)).split() if pieces else []


SPM_MODEL = "spm.model"   # where a run folder keeps its subword model


def run_tokenizer(run_dir: str | Path) -> "SubwordTokenizer | None":
    """The subword model of a run folder, or None for a word-level run."""
    path = Path(run_dir) / SPM_MODEL
    return SubwordTokenizer.load(path) if path.is_file() else None


def to_units(sentences: Sequence[Sequence[str]], tokenizer: "SubwordTokenizer | None") -> list:
    """Token lists as the model's units: pieces with a tokenizer, the words themselves without."""
    return [tokenizer.encode(s) for s in sentences] if tokenizer else list(sentences)
