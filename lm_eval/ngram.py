"""Interpolated modified Kneser-Ney n-gram LM, estimated exactly as KenLM's `lmplz`; ARPA in/out.

    lm = NGramLM.train(sentences, order=5)          # sentences: list[list[str]]
    lm.score(test).ppl                              # PROTOCOL.md §4 perplexity
    lm.to_arpa("lm.arpa"); NGramLM.from_arpa("lm.arpa")

Conventions (PROTOCOL.md §4): a sentence is framed `<s> w1 .. wn </s>`; `</s>` is scored, `<s>` is
not; every log-probability this module returns is a natural log (ARPA files and KenLM speak
log10; the model keeps log10 internally so that an ARPA round trip is bit-exact). Literal `<s>` /
`</s>` tokens inside a sentence are framing, not words: they are dropped (lmplz's
`--skip_symbols`). A word outside the vocabulary is scored as `<unk>`; `ScoreResult.oov` counts
the tokens scored as `<unk>` (literal `<unk>` included, as KenLM's `query` counts them).

Estimation (Chen & Goodman 1998, Heafield et al. 2013, lmplz's `lm/builder`):

* Counts. The highest order N keeps raw counts. A lower-order n-gram's count is its number of
  unique left extensions (adjusted / continuation count), except n-grams that start with `<s>`,
  which keep raw counts because nothing can extend them to the left. The unigram `<s>` has count 0.
* Discounts. Per order, from the counts-of-counts n_k of those (adjusted) counts:
  Y = n1 / (n1 + 2 n2), D_k = k - (k+1) Y n_{k+1} / n_k for k = 1, 2, 3 (D3 serves counts >= 3).
  When some n_k (k <= 3) is 0 or a D_k falls outside [0, k] (tiny, duplicated or artificial data),
  lmplz stops unless given `--discount_fallback`; here the order gets the fallback discounts
  (default 0.5, 1, 1.5, lmplz's) and `OrderStats.fallback` records why. `discount_fallback=None`
  raises instead, like lmplz's default.
* Probabilities. For context h with continuations c(h w):
  p(w | h) = (c(h w) - D(c(h w))) / sum_w' c(h w') + gamma(h) p(w | h'),
  gamma(h) = sum_k D_k N_k(h) / sum_w' c(h w'), with N_k(h) the number of continuations of count k
  (3 meaning 3+), and h' the context without its first word. The unigrams interpolate with the
  uniform distribution over the vocabulary without `<s>` (`<unk>` and `</s>` included).
* `<unk>`. lmplz never sees `<unk>` in its input, so its count is 0 and it receives exactly the
  interpolated uniform mass gamma(empty) / |V|. Here a training `<unk>` (PTB's literal one) is an
  ordinary word with counts; with no `<unk>` in training this is lmplz's value.
* The unigram `<s>` gets log10 probability 0 (lmplz's convention; it is never predicted).
* ARPA backoff of an n-gram = gamma of that n-gram as a context (log10 0 when it is not one).

Every probability then equals the backoff form KenLM evaluates: for the longest n-gram (h_k w) in
the model, log p(w | h) = log p(h_k w) + sum over longer contexts h_j (j >= k) of log b(h_j).

Storage. Order-n n-grams are int64 keys `index of the (n-1)-gram prefix * V + last word id` in a
sorted array (order 1: the word id itself), so counting is `np.unique` over keys and every lookup
is `np.searchsorted`; no Python loop runs per n-gram or per token in counting or scoring.
"""
from __future__ import annotations

import gzip
import math
import warnings
from dataclasses import dataclass
from itertools import chain, islice, repeat
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

UNK, BOS, EOS = "<unk>", "<s>", "</s>"
# The n-gram LM's own word ids (its word2id); corpora.vocab's differ (its <unk> is 1).
NGRAM_UNK, BOS_ID, EOS_ID = 0, 1, 2
MAX_ORDER = 6
DEFAULT_FALLBACK = (0.5, 1.0, 1.5)
LN10 = math.log(10.0)
UNK_MISSING_LOG10 = -100.0   # what KenLM gives `<unk>` when an ARPA file lacks it


@dataclass(frozen=True)
class ScoreResult:
    """Totals of a scoring pass; `logprob` is a natural log, `tokens` counts `</s>` and OOVs."""
    logprob: float
    tokens: int
    oov: int
    sentences: int

    @property
    def ppl(self) -> float:
        return math.exp(-self.logprob / self.tokens) if self.tokens else float("nan")


@dataclass(frozen=True)
class OrderStats:
    """What estimation saw and chose for one order (order n is `stats[n - 1]`)."""
    order: int
    ngrams: int
    counts_of_counts: tuple[int, int, int, int]   # n1..n4 of the (adjusted) counts
    discounts: tuple[float, float, float]         # D1, D2, D3+ actually used
    fallback: bool                                # True: the closed form failed, fallback used
    reason: str | None = None                     # why the closed form failed


@dataclass(frozen=True)
class NGramEntry:
    """One n-gram as stored: natural-log probability and backoff; counts only for trained models."""
    logprob: float
    backoff: float
    count: int | None = None        # count the estimate used (adjusted or raw)
    raw_count: int | None = None    # occurrences in the framed training text


def kn_discounts(n: Sequence[int]) -> tuple[tuple[float, float, float], str | None]:
    """Closed-form modified-KN discounts from counts-of-counts n = (n1, n2, n3, n4).

    Returns (D1, D2, D3+) and None, or (nan, nan, nan) and the reason they are invalid (lmplz's
    two checks: some n_k == 0 for k <= 3, or some D_k outside [0, k]).
    """
    n1, n2, n3, n4 = (int(x) for x in n)
    for k, nk in ((1, n1), (2, n2), (3, n3)):
        if nk == 0:
            return (math.nan,) * 3, f"no n-grams with adjusted count {k}"
    y = n1 / (n1 + 2.0 * n2)
    d = (1.0 - 2.0 * y * n2 / n1, 2.0 - 3.0 * y * n3 / n2, 3.0 - 4.0 * y * n4 / n3)
    for k, dk in enumerate(d, start=1):
        if not 0.0 <= dk <= k:
            return (math.nan,) * 3, f"D{k}={dk:.6g} outside [0, {k}]"
    return d, None


def _check_fallback(fallback: Sequence[float] | None) -> tuple[float, float, float] | None:
    if fallback is None:
        return None
    f = tuple(float(x) for x in fallback)
    if len(f) != 3 or not all(0.0 <= dk <= k for k, dk in enumerate(f, start=1)):
        raise ValueError("discount_fallback must be (D1, D2, D3+) with 0 <= Dk <= k,"
                         f" got {fallback}")
    return f  # type: ignore[return-value]


def _drop_markers(sentences: list[Sequence[str]], words: Iterable[str]) -> list[Sequence[str]]:
    """Remove literal `<s>` / `</s>` tokens (only walks sentences when some are present)."""
    if BOS in words or EOS in words:
        return [[w for w in s if w != BOS and w != EOS] for s in sentences]
    return sentences


ENCODE_CHUNK = 65536  # sentences read at a time: only their ids outlive the chunk


def _encode_stream(sentences: Iterable[Sequence[str]], word2id: dict[str, int],
                   grow: bool) -> tuple[np.ndarray, np.ndarray]:
    """Concatenated word ids (T,) and lengths (S,) of tokenised sentences, `<s>`/`</s>` dropped.

    Reads ENCODE_CHUNK sentences at a time, so that an iterator over a file of 100,000 samples
    is never held as lists of words (nor twice, as sentences and as tokens): only int64 ids
    are kept. `grow`: a word not in `word2id` gets the next id (first-appearance order, which
    training's vocabulary uses); otherwise it is scored as `<unk>`.
    """
    ids, lengths = [], []
    it = iter(sentences)
    while part := list(islice(it, ENCODE_CHUNK)):
        flat = list(chain.from_iterable(part))
        present = set(flat)
        if BOS in present or EOS in present:
            part = _drop_markers(part, present)
            flat = list(chain.from_iterable(part))
        if grow:  # one pass over the chunk's distinct words, not its tokens
            new = [w for w in dict.fromkeys(flat) if w not in word2id]
            word2id.update(zip(new, range(len(word2id), len(word2id) + len(new))))
            ids.append(np.fromiter(map(word2id.__getitem__, flat), dtype=np.int64, count=len(flat)))
        else:
            ids.append(np.fromiter(map(word2id.get, flat, repeat(NGRAM_UNK)), dtype=np.int64,
                                   count=len(flat)))
        lengths.append(np.fromiter(map(len, part), dtype=np.int64, count=len(part)))
    if not ids:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    return np.concatenate(ids), np.concatenate(lengths)


def _frame(ids: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lay sentences out as `<s> w1 .. wn </s>` back to back.

    ids: (sum lengths,) word ids; lengths: (S,). Returns w: (T,) ids, offset: (T,) position inside
    its framed sentence (0 at `<s>`), sent: (T,) sentence index; T = sum(lengths + 2).
    """
    framed = lengths + 2
    starts = (np.cumsum(framed) - framed).astype(np.int64)
    total = int(framed.sum())
    sent = np.repeat(np.arange(len(lengths), dtype=np.int64), framed)
    offset = np.arange(total, dtype=np.int64) - starts[sent]
    w = np.empty(total, dtype=np.int64)
    is_word = np.ones(total, dtype=bool)
    is_word[starts] = False
    is_word[starts + framed - 1] = False
    w[starts] = BOS_ID
    w[starts + framed - 1] = EOS_ID
    w[is_word] = ids
    return w, offset, sent


def _lmplz_stat_counts(counts: list[np.ndarray], raw: list[np.ndarray], w: np.ndarray,
                       offset: np.ndarray, keys: list[np.ndarray], V: int) -> list[np.ndarray]:
    """The counts lmplz's counts-of-counts see: the adjusted counts, with one quirk reproduced.

    lmplz's AdjustCounts walks the highest-order n-grams in suffix order (last word id first;
    ids follow first appearance, as ours do) and, when the walk ends, files the lower-order
    n-grams still open (the suffixes of the last N-gram, those not starting with `<s>`) into the
    statistics with their raw count instead of their adjusted count. The probabilities use the
    adjusted counts; only the discounts feel it (e.g. PTB's unigram D3+ 1.2649 vs 1.2623).
    """
    order = len(counts)
    if order == 1:
        return counts
    # The last padded N-gram in suffix order: compare w[t], then w[t-1], ... (<s> padding).
    cand = np.flatnonzero(offset >= 1)
    for j in range(order):
        if len(cand) == 0:
            return counts
        col = np.where(offset[cand] >= j, w[cand - np.minimum(j, offset[cand])], BOS_ID)
        cand = cand[col == col.max()]
    t = int(cand[0])
    out = list(counts)
    idx = int(w[t])                                        # unigram index of the suffix
    for n in range(1, min(order - 1, int(offset[t]) + 1) + 1):
        if n > 1:
            idx = int(np.searchsorted(keys[n - 1], _suffix_key(keys, w, t, n, V)))
        if offset[t] - (n - 1) >= 1:                       # does not start with <s>
            out[n - 1] = counts[n - 1].copy()
            out[n - 1][idx] = raw[n - 1][idx]
    return out


def _suffix_key(keys: list[np.ndarray], w: np.ndarray, t: int, n: int, V: int) -> int:
    """Key of the order-n n-gram w[t-n+1 .. t] (it must be in the model)."""
    idx = int(w[t - n + 1])
    for k in range(2, n + 1):
        key = idx * V + int(w[t - n + k])
        if k == n:
            return key
        idx = int(np.searchsorted(keys[k - 1], key))
    return idx


def _parse_section(body: str, n: int, declared: int):
    """Parse the lines of one `\\n-grams:` section.

    Returns (log10 probs: (L,), word columns: n lists of L strings, log10 backoffs: (L,), 0 where
    a line has none). Fast path: every line has the same width (lmplz and `to_arpa` output).
    """
    toks = body.split()
    lines = body.strip().count("\n") + 1 if toks else 0
    if lines != declared:
        raise ValueError(f"{n}-grams: header says {declared}, found {lines}")
    for width in (n + 1, n + 2):
        if len(toks) == lines * width:
            prob = np.fromiter(map(float, toks[0::width]), dtype=np.float64, count=lines)
            cols = [toks[1 + j::width] for j in range(n)]
            bow = (np.fromiter(map(float, toks[n + 1::width]), dtype=np.float64, count=lines)
                   if width == n + 2 else np.zeros(lines))
            return prob, cols, bow
    rows = [r for r in map(str.split, body.splitlines()) if r]          # mixed widths
    if any(not n + 1 <= len(r) <= n + 2 for r in rows):
        raise ValueError(f"malformed line in the {n}-grams section")
    prob = np.array([float(r[0]) for r in rows])
    cols = [[r[1 + j] for r in rows] for j in range(n)]
    bow = np.array([float(r[n + 1]) if len(r) == n + 2 else 0.0 for r in rows])
    return prob, cols, bow


class NGramLM:
    """A back-off n-gram LM held as sorted key arrays with log10 probabilities and backoffs.

    Build with `NGramLM.train` or `NGramLM.from_arpa`. `vocab[i]` is the word of id i; ids 0, 1, 2
    are `<unk>`, `<s>`, `</s>`.
    """

    def __init__(self, vocab: list[str], keys: list[np.ndarray], logp10: list[np.ndarray],
                 bow10: list[np.ndarray], stats: list[OrderStats] | None = None,
                 counts: list[np.ndarray] | None = None,
                 raw_counts: list[np.ndarray] | None = None):
        if tuple(vocab[:3]) != (UNK, BOS, EOS):
            raise ValueError(f"vocab must start with {UNK} {BOS} {EOS}")
        self.vocab = vocab
        self.word2id = {w: i for i, w in enumerate(vocab)}
        self.order = len(keys)
        self._keys, self._logp10, self._bow10 = keys, logp10, bow10   # bow10: orders 1..N-1
        self.stats = stats or []
        self._counts, self._raw_counts = counts, raw_counts
        if len(vocab) * max(len(k) for k in keys) >= 2 ** 62:
            raise ValueError("model too large for int64 n-gram keys")

    # ----------------------------------------------------------------- estimation
    @classmethod
    def train(cls, sentences: Iterable[Sequence[str]], order: int = 5,
              discount_fallback: Sequence[float] | None = DEFAULT_FALLBACK,
              vocab: Iterable[str] | None = None) -> "NGramLM":
        """Estimate an interpolated modified-KN model as `lmplz -o order [--discount_fallback]`.

        sentences: tokenised sentences without `<s>` / `</s>`. `discount_fallback`: (D1, D2, D3+)
        for orders whose closed-form discounts are invalid (recorded in `stats`, with a warning);
        None raises ValueError there instead. `vocab`: extra words that join the vocabulary with
        count 0, so each gets its share of the interpolated uniform mass (like `<unk>`) instead
        of being scored as `<unk>`. Reverse perplexity uses the corpus vocabulary here, so that
        a small sample set cannot win by sending most test words to a cheap `<unk>`.
        """
        if not 1 <= order <= MAX_ORDER:
            raise ValueError(f"order must be in 1..{MAX_ORDER}, got {order}")
        fallback = _check_fallback(discount_fallback)
        word2id = {UNK: NGRAM_UNK, BOS: BOS_ID, EOS: EOS_ID}
        ids, lengths = _encode_stream(sentences, word2id, grow=True)
        extra = [w for w in dict.fromkeys(vocab or ()) if w not in word2id]
        vocab = list(word2id) + extra
        w, offset, _ = _frame(ids, lengths)
        V = len(vocab)

        # Counting, order by order. idx[t]: index of the n-gram ending at t (-1: none, because it
        # would cross the sentence start). An n-gram's suffix and "starts with <s>" flag come from
        # any one occurrence.
        keys, raw, suffix, bos_initial = [np.arange(V, dtype=np.int64)], [], [None], []
        scored = offset >= 1
        raw.append(np.bincount(w[scored], minlength=V).astype(np.int64))
        bos_initial.append(np.arange(V) == BOS_ID)
        idx_prev = w.copy()
        for n in range(2, order + 1):
            pos = np.flatnonzero(offset >= n - 1)
            key = idx_prev[pos - 1] * V + w[pos]
            uniq, inv, cnt = np.unique(key, return_inverse=True, return_counts=True)
            suf = np.empty(len(uniq), dtype=np.int64)
            suf[inv] = idx_prev[pos]                       # (n-1)-gram ending at the same token
            bos0 = np.zeros(len(uniq), dtype=bool)
            bos0[inv] = offset[pos] == n - 1               # first word is the sentence's <s>
            idx = np.full(len(w), -1, dtype=np.int64)
            idx[pos] = inv
            keys.append(uniq)
            raw.append(cnt.astype(np.int64))
            suffix.append(suf)
            bos_initial.append(bos0)
            idx_prev = idx

        # Adjusted counts: unique left extensions, except the highest order and <s>-initial ones.
        counts = []
        for n in range(1, order + 1):
            if n == order:
                c = raw[n - 1]
            else:
                c = np.bincount(suffix[n], minlength=len(keys[n - 1])).astype(np.int64)
                c = np.where(bos_initial[n - 1], raw[n - 1], c)
            counts.append(c)

        # Discounts per order, with lmplz's fallback.
        stat_counts = _lmplz_stat_counts(counts, raw, w, offset, keys, V)
        stats, discounts = [], []
        for n, c in enumerate(stat_counts, start=1):
            coc = np.bincount(np.minimum(c, 5), minlength=6)[1:5]
            d, reason = kn_discounts(coc)
            if reason is not None:
                if fallback is None:
                    raise ValueError(f"order {n}: cannot estimate Kneser-Ney discounts ({reason});"
                                     " pass discount_fallback=(D1, D2, D3+)")
                warnings.warn(f"order {n}: {reason}; using fallback discounts {fallback}",
                              RuntimeWarning, stacklevel=2)
                d = fallback
            discounts.append(np.array((0.0,) + tuple(d)))
            stats.append(OrderStats(n, len(c), tuple(int(x) for x in coc),
                                    tuple(float(x) for x in d), reason is not None, reason))

        # Interpolated probabilities, lowest order first; gammas become the lower order's backoffs.
        logp10, bow10 = [], []
        lower = None
        for n in range(1, order + 1):
            c = counts[n - 1]
            ctx = keys[n - 1] // V                        # index of the (n-1)-gram context
            n_ctx = 1 if n == 1 else len(keys[n - 2])
            dc = discounts[n - 1][np.minimum(c, 3)]
            denom = np.bincount(ctx, weights=c, minlength=n_ctx)
            is_ctx = denom > 0
            safe = np.where(is_ctx, denom, 1.0)
            gamma = np.where(is_ctx, np.bincount(ctx, weights=dc, minlength=n_ctx) / safe, 1.0)
            lower_p = np.full(len(c), 1.0 / (V - 1)) if n == 1 else lower[suffix[n - 1]]
            p = (c - dc) / safe[ctx] + gamma[ctx] * lower_p
            if n == 1:
                p[BOS_ID] = 1.0
            else:
                with np.errstate(divide="ignore"):
                    bow10.append(np.where(is_ctx, np.log10(gamma), 0.0))
            with np.errstate(divide="ignore"):
                logp10.append(np.minimum(np.log10(p), 0.0))
            lower = p
        return cls(vocab, keys, logp10, bow10, stats, counts, raw)

    @property
    def used_discount_fallback(self) -> bool:
        return any(s.fallback for s in self.stats)

    @property
    def fallback_orders(self) -> list[int]:
        return [s.order for s in self.stats if s.fallback]

    def num_ngrams(self) -> list[int]:
        return [len(k) for k in self._keys]

    # ----------------------------------------------------------------- scoring
    def _encode(self, sentences: Iterable[Sequence[str]]):
        return _encode_stream(sentences, self.word2id, grow=False)

    def _log10_probs(self, w: np.ndarray, offset: np.ndarray) -> np.ndarray:
        """log10 p(w[t] | up to order-1 preceding tokens) for every t; w, offset: (T,).

        offset[t] is how many tokens of w before t belong to t's history (0: t starts a history
        and is not predicted; its entry is meaningless). KenLM's search: the n-gram order grows
        while the n-gram is found; backoffs of the unmatched longer contexts are added.
        """
        V = len(self.vocab)
        logp = self._logp10[0][w].copy()
        idx_prev = w                                   # unigram index == word id
        hit_prev = np.ones(len(w), dtype=bool)         # n-gram ending at t found (all orders <= n)
        for n in range(2, self.order + 1):
            keys = self._keys[n - 1]
            ctx_ok = np.zeros(len(w), dtype=bool)      # (n-1)-gram ending at t-1 is in the model
            ctx_ok[1:] = hit_prev[:-1]
            ctx_ok &= offset >= n - 1
            ctx_idx = np.zeros(len(w), dtype=np.int64)
            ctx_idx[1:] = idx_prev[:-1]
            ctx_idx[~ctx_ok] = 0
            ctx_bow = self._bow10[n - 2]
            bow = np.where(ctx_ok, ctx_bow[ctx_idx], 0.0) if len(ctx_bow) else np.zeros(len(w))
            if len(keys):
                key = ctx_idx * V + w
                pos = np.minimum(np.searchsorted(keys, key), len(keys) - 1)
                hit = ctx_ok & hit_prev & (keys[pos] == key)
                logp = np.where(hit, self._logp10[n - 1][pos], logp + bow)
            else:
                pos, hit = np.zeros(len(w), dtype=np.int64), np.zeros(len(w), dtype=bool)
                logp = logp + bow
            idx_prev, hit_prev = np.where(hit, pos, 0), hit
        return logp

    def _sentence_log10(self, sentences) -> tuple[np.ndarray, int, int, int]:
        ids, lengths = self._encode(sentences)
        w, offset, sent = _frame(ids, lengths)
        lp = self._log10_probs(w, offset)
        scored = offset >= 1
        per_sent = np.bincount(sent[scored], weights=lp[scored], minlength=len(lengths))
        return per_sent, int(scored.sum()), int((ids == NGRAM_UNK).sum()), len(lengths)

    def sentence_logprobs(self, sentences: Iterable[Sequence[str]]) -> np.ndarray:
        """Natural-log probability of each framed sentence: (S,) float64."""
        return self._sentence_log10(sentences)[0] * LN10

    def score(self, sentences: Iterable[Sequence[str]]) -> ScoreResult:
        """Total natural-log probability, scored tokens (words + `</s>`), OOVs, sentences."""
        per_sent, tokens, oov, n = self._sentence_log10(sentences)
        return ScoreResult(float(per_sent.sum() * LN10), tokens, oov, n)

    def next_word_logprobs(self, context: Sequence[str]) -> np.ndarray:
        """ln p(w | context) for every vocabulary id w: (V,); `<s>` gets -inf.

        A context that starts with `<s>` is a sentence start; otherwise it is a sentence middle.
        """
        ids, _ = self._encode([list(context)])
        if len(context) and context[0] == BOS:
            ids = np.concatenate(([BOS_ID], ids))
        V, L = len(self.vocab), len(ids)
        if L == 0:
            lp = self._logp10[0].copy()
        else:
            w = np.empty((V, L + 1), dtype=np.int64)
            w[:, :L] = ids
            w[:, L] = np.arange(V)
            offset = np.broadcast_to(np.arange(L + 1), (V, L + 1))
            lp = self._log10_probs(w.ravel(), offset.ravel()).reshape(V, L + 1)[:, -1]
        out = lp * LN10
        out[BOS_ID] = -np.inf
        return out

    def logprob(self, word: str, context: Sequence[str] = ()) -> float:
        """ln p(word | context); see `next_word_logprobs` for what the context means."""
        return float(self.next_word_logprobs(context)[self.word2id.get(word, NGRAM_UNK)])

    # ----------------------------------------------------------------- inspection
    def _words(self, n: int) -> np.ndarray:
        """Word ids of every order-n n-gram, in storage order: (len, n) int64."""
        V = len(self.vocab)
        words = self._keys[0][:, None]
        for k in range(2, n + 1):
            keys = self._keys[k - 1]
            words = np.concatenate((words[keys // V], (keys % V)[:, None]), axis=1)
        return words

    def ngram_arrays(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Order-n n-grams in storage order: word ids (L, n), ln prob (L,), ln backoff (L,)."""
        bo = self._bow10[n - 1] if n < self.order else np.zeros(len(self._keys[n - 1]))
        return self._words(n), self._logp10[n - 1] * LN10, bo * LN10

    def ngram_table(self, n: int) -> dict[tuple[str, ...], NGramEntry]:
        """All order-n n-grams with their entries (a Python dict: for inspection and tests)."""
        words, lp, bo = self.ngram_arrays(n)
        cnt = self._counts[n - 1] if self._counts is not None else None
        raw = self._raw_counts[n - 1] if self._raw_counts is not None else None
        table = {}
        for i, row in enumerate(words.tolist()):
            table[tuple(self.vocab[j] for j in row)] = NGramEntry(
                float(lp[i]), float(bo[i]), None if cnt is None else int(cnt[i]),
                None if raw is None else int(raw[i]))
        return table

    # ----------------------------------------------------------------- ARPA
    def to_arpa(self, path: str | Path) -> None:
        """Write an ARPA file (log10; backoff on every line below the highest order, as lmplz).

        Values are written with Python's shortest round-trip repr, so `from_arpa` reads back the
        exact model. A `.gz` suffix writes gzip.
        """
        path = Path(path)
        vocab = np.array(self.vocab, dtype=object)
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "wt", encoding="utf-8") as f:
            f.write("\\data\\\n")
            f.write("".join(f"ngram {n}={len(k)}\n" for n, k in enumerate(self._keys, start=1)))
            for n in range(1, self.order + 1):
                words = self._words(n)
                cols = [vocab[words[:, j]].tolist() for j in range(n)]
                probs = map(repr, self._logp10[n - 1].tolist())
                ngram = "{}" + " {}" * (n - 1)
                if n < self.order:
                    bows = map(repr, self._bow10[n - 1].tolist())
                    lines = map(("{}\t" + ngram + "\t{}\n").format, probs, *cols, bows)
                else:
                    lines = map(("{}\t" + ngram + "\n").format, probs, *cols)
                f.write(f"\n\\{n}-grams:\n")
                f.write("".join(lines))
            f.write("\n\\end\\\n")

    @classmethod
    def from_arpa(cls, path: str | Path) -> "NGramLM":
        """Read an ARPA file (e.g. from lmplz or `to_arpa`); `.gz` is read as gzip.

        Every n-gram's prefix must be in the model (true of lmplz and SRILM output). A missing
        `<unk>` gets log10 probability -100, as KenLM gives it.
        """
        path = Path(path)
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", encoding="utf-8") as f:
            text = f.read()
        start = text.find("\\data\\")
        if start < 0:
            raise ValueError(f"{path}: no \\data\\ header")
        header_end = text.find("\\1-grams:", start)
        declared = {}
        for line in text[start:header_end].splitlines()[1:]:
            line = line.strip()
            if line.startswith("ngram"):
                n, cnt = line[5:].split("=")
                declared[int(n)] = int(cnt)
        if not declared or header_end < 0:
            raise ValueError(f"{path}: malformed \\data\\ header")
        order = max(declared)
        sections = []
        for n in range(1, order + 1):
            head = text.find(f"\\{n}-grams:", start)
            if head < 0:
                raise ValueError(f"{path}: missing \\{n}-grams: section")
            body_start = text.find("\n", head) + 1
            body_end = text.find("\n\\", body_start - 1)
            sections.append(_parse_section(text[body_start:body_end + 1], n, declared[n]))
        return cls._from_sections(sections)

    @classmethod
    def _from_sections(cls, parsed) -> "NGramLM":
        """Build from parsed ARPA sections: (log10 probs, word columns, log10 backoffs)."""
        order = len(parsed)
        prob1, words1, bow1 = parsed[0]
        uni = words1[0]
        if len(set(uni)) != len(uni):
            raise ValueError("duplicate unigram")
        present = set(uni)
        for special in (BOS, EOS):
            if special not in present:
                warnings.warn(f"ARPA file has no {special}; adding it", RuntimeWarning,
                              stacklevel=3)
        vocab = [UNK, BOS, EOS] + [w for w in uni if w not in (UNK, BOS, EOS)]
        word2id = {w: i for i, w in enumerate(vocab)}
        logp1 = np.full(len(vocab), UNK_MISSING_LOG10)
        logp1[BOS_ID] = 0.0
        bo1 = np.zeros(len(vocab))
        ids1 = np.fromiter(map(word2id.__getitem__, uni), dtype=np.int64, count=len(uni))
        logp1[ids1], bo1[ids1] = prob1, bow1
        V = len(vocab)
        keys, logp10, bow10 = [np.arange(V, dtype=np.int64)], [logp1], [bo1]
        for n in range(2, order + 1):
            prob, words, bow = parsed[n - 1]
            try:
                ids = np.stack([np.fromiter(map(word2id.__getitem__, col), dtype=np.int64,
                                            count=len(col)) for col in words], axis=1)
            except KeyError as e:
                raise ValueError(f"{n}-gram word {e} is not a unigram") from None
            idx = ids[:, 0]
            for k in range(2, n):                  # index of each prefix in the order-k table
                key = idx * V + ids[:, k - 1]
                pos = np.minimum(np.searchsorted(keys[k - 1], key), len(keys[k - 1]) - 1)
                if len(key) and not (keys[k - 1][pos] == key).all():
                    raise ValueError(f"a {n}-gram's {k}-word prefix is missing from the model")
                idx = pos
            key = idx * V + ids[:, n - 1]
            sort = np.argsort(key, kind="stable")
            key = key[sort]
            if len(key) > 1 and (np.diff(key) == 0).any():
                raise ValueError(f"duplicate {n}-gram")
            keys.append(key)
            logp10.append(prob[sort])
            bow10.append(bow[sort])
        return cls(vocab, keys, logp10, bow10[:order - 1])
