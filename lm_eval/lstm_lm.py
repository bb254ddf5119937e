"""The word-level LSTM language model used as an evaluator (forward / reverse perplexity).

Sentence level, as in PROTOCOL.md §4: every sentence is framed `<s> w1 .. wn </s>` and scored on
its own (no state carried across sentences); `</s>` is scored, `<s>` is not, and

    perplexity = exp(total negative log-likelihood / number of scored tokens).

Training follows the classic recipe for small LSTM LMs (Zaremba et al. 2014; Kim et al.'s text-VAE
baselines): SGD at lr 1.0, gradient norm clipped at 5, the loss summed over each sentence's tokens
and averaged over the batch, dropout 0.5 on embeddings and outputs, every weight from
Unif(-0.1, 0.1); the lr is multiplied by 0.25 after each epoch whose validation perplexity does not
beat the best so far, and training stops once that has happened `max_decays` times (or after
`patience` such epochs in a row, or at `max_epochs`). The best-on-validation weights are kept.

A model folder holds `lm.pt` (a state_dict), `lm_config.json` and `vocab.txt`; a training folder
adds `lm_train.pt` (current and best weights, optimiser, epoch, lr, torch RNG: tensors and plain
containers only, so everything loads with `torch.load(weights_only=True)`) and `lm_history.json`.
Every write is atomic (temporary file, then rename), so an interrupted run resumes from its last
finished epoch.
"""
from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from corpora.batching import Batches, by_length, frame, scored_tokens
from common.progress import Bar
from corpora.vocab import UNK_ID, Vocab
from common.storage import CheckpointError, atomic_write, load_tensors, torch_bytes, write_json
from common.precision import DTYPES, PRECISIONS, autocast, resolve as resolve_precision
from common.softmax import sentence_log_probs

MODEL, CONFIG, VOCAB, TRAIN_STATE, HISTORY = ("lm.pt", "lm_config.json", "vocab.txt",
                                              "lm_train.pt", "lm_history.json")


@dataclass
class LSTMLMConfig:
    """Sizes and training recipe of the evaluator LM (defaults: the paper's 300/300 setting)."""
    embed: int = 300
    hidden: int = 300
    layers: int = 1
    dropout: float = 0.5        # on embeddings, between layers and on LSTM outputs
    tied: bool = False          # share input embedding and output projection (needs embed == hidden)
    init_range: float = 0.1     # every parameter ~ Unif(-init_range, init_range)
    lr: float = 1.0             # plain SGD
    clip: float = 5.0           # max global gradient norm
    lr_decay: float = 0.25      # lr *= lr_decay after an epoch without a new best valid ppl
    max_decays: int = 3         # stop at the first non-improving epoch once lr has decayed this often
    patience: int = 0           # also stop after this many non-improving epochs in a row; 0: off
    max_epochs: int = 30
    batch_size: int = 32
    loss: str = "sentence"      # "sentence": sum over tokens, mean over sentences; "token": mean/token
    seed: int = 0
    precision: str = "fp32"     # fp32, bf16 or auto (common.precision; auto is resolved at training)

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.tied and self.embed != self.hidden:
            raise ValueError(f"tied embeddings need embed == hidden, got {self.embed} != {self.hidden}")
        if self.loss not in ("sentence", "token"):
            raise ValueError(f"loss must be 'sentence' or 'token', got {self.loss!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "LSTMLMConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown LSTM LM config keys {sorted(unknown)}")
        return cls(**d)


class LSTMLM(nn.Module):
    """p(x) = prod_t p(x_t | x_<t) with an LSTM over word embeddings, one sentence at a time."""

    def __init__(self, vocab_size: int, cfg: LSTMLMConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(vocab_size, cfg.embed)
        self.lstm = nn.LSTM(cfg.embed, cfg.hidden, cfg.layers, batch_first=True,
                            dropout=cfg.dropout if cfg.layers > 1 else 0.0)
        self.drop = nn.Dropout(cfg.dropout)
        self.proj = nn.Linear(cfg.hidden, vocab_size)
        for p in self.parameters():
            nn.init.uniform_(p, -cfg.init_range, cfg.init_range)
        if cfg.tied:
            self.proj.weight = self.embed.weight
        self.compute_dtype = DTYPES.get(cfg.precision, torch.float32)  # not in the state_dict

    @property
    def vocab_size(self) -> int:
        return self.embed.num_embeddings

    def _states(self, x: torch.Tensor) -> torch.Tensor:
        """LSTM outputs before each target. x: (B, T) long -> (B, T-1, H).

        Padding only ever follows `</s>`, and the LSTM runs left to right, so the outputs at real
        positions do not depend on how much padding the batch has (no packing needed).
        """
        with autocast(x.device.type, self.compute_dtype):
            out, _ = self.lstm(self.drop(self.embed(x[:, :-1])))
        return out

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x) per sentence, summed over the scored tokens (words and `</s>`, not `<s>`).

        x: (B, T) long, framed `<s> w1 .. wn </s> <pad>..` -> (B,). The output projection and the
        softmax run only at real (non-pad) target positions.
        """
        return sentence_log_probs(self._states(x), x, self.proj, self.drop, self.compute_dtype)

    def next_log_probs(self, x: torch.Tensor) -> torch.Tensor:
        """The full next-word distribution at every position. x: (B, T) -> (B, T-1, V) log-probs.

        For inspection and small inputs; it computes the softmax at padding positions too.
        """
        return F.log_softmax(self.proj(self.drop(self._states(x).float())), -1)


# --- evaluation --------------------------------------------------------------------------------

def _sorted_batches(ids: list[list[int]], batch_size: int, max_tokens: int):
    """(indices into ids, framed batch) of similar length, capped in sentences and in target
    positions."""
    for ix in by_length(ids, batch_size, max_tokens):
        yield ix, frame([ids[j] for j in ix])


@torch.no_grad()
def _sentence_nll(model: LSTMLM, ids: list[list[int]], device, batch_size: int,
                  max_tokens: int) -> tuple[torch.Tensor, int]:
    """-log p(x) of each sentence in input order: (N,) float64 nats, and the scored tokens."""
    model.eval()
    nll = torch.zeros(len(ids), dtype=torch.float64)
    tokens = 0
    for ix, x in _sorted_batches(ids, batch_size, max_tokens):
        tokens += int(scored_tokens(x).sum())
        nll[torch.as_tensor(ix)] = -model.log_prob(x.to(device)).double().cpu()
    return nll, tokens


def _total_nll(model: LSTMLM, ids: list[list[int]], device, batch_size: int,
               max_tokens: int) -> tuple[float, int]:
    nll, tokens = _sentence_nll(model, ids, device, batch_size, max_tokens)
    return float(nll.sum()), tokens


def sentence_nll(model: LSTMLM, sentences: list[list[str]], vocab: Vocab, device,
                 batch_size: int = 128, max_tokens: int = 4096) -> torch.Tensor:
    """-log p(x) in nats of each of `sentences` (token lists, unframed), in their order: (N,)
    float64. The per-sentence view of evaluate_ppl, for comparisons sentence by sentence."""
    return _sentence_nll(model, [vocab.encode(s) for s in sentences], device, batch_size, max_tokens)[0]


def evaluate_ppl(model: LSTMLM, sentences: list[list[str]], vocab: Vocab, device,
                 batch_size: int = 128, max_tokens: int = 4096) -> dict:
    """Sentence-level perplexity of `sentences` (token lists, unframed).

    Returns {ppl, nll, tokens, oov, unk, sentences}: nll is the total in nats; tokens counts the
    scored tokens (words and one `</s>` per sentence); oov counts words absent from the vocabulary
    (scored as `<unk>`); unk counts every token scored as `<unk>` (oov plus literal `<unk>`).
    Batches hold at most `batch_size` sentences and `max_tokens` target positions (a longer
    sentence goes alone); the result does not depend on either beyond float rounding.
    """
    if not sentences:
        raise ValueError("no sentences to score")
    ids = [vocab.encode(s) for s in sentences]
    nll, tokens = _total_nll(model, ids, device, batch_size, max_tokens)
    unk = sum(s.count(UNK_ID) for s in ids)
    oov = sum(1 for s in sentences for w in s if w not in vocab.stoi)
    return {"ppl": math.exp(nll / tokens), "nll": nll, "tokens": tokens, "oov": oov, "unk": unk,
            "sentences": len(sentences)}


# --- saving and loading ------------------------------------------------------------------------

def save_lm(directory: str | Path, model: LSTMLM, cfg: LSTMLMConfig, vocab: Vocab) -> None:
    """Write `lm.pt` (state_dict), `lm_config.json` and `vocab.txt` into `directory`, atomically."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    if len(vocab) != model.vocab_size:
        raise ValueError(f"vocabulary has {len(vocab)} words, the model {model.vocab_size}")
    write_json(d / CONFIG, {"lstm_lm": cfg.to_dict(), "vocab_size": len(vocab)})
    atomic_write(d / VOCAB, ("\n".join(vocab.itos) + "\n").encode())
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    atomic_write(d / MODEL, torch_bytes(state))


def _load_config_vocab(d: Path) -> tuple[LSTMLMConfig, Vocab]:
    try:
        meta = json.loads((d / CONFIG).read_text())
        cfg = LSTMLMConfig.from_dict(meta["lstm_lm"])
        vocab = Vocab.load(d / VOCAB)
    except FileNotFoundError as e:
        raise CheckpointError(f"{d} lacks {Path(e.filename).name}: not an LSTM LM folder") from None
    except (ValueError, TypeError, KeyError) as e:
        raise CheckpointError(f"{d}: unreadable LSTM LM config or vocabulary ({e})") from None
    if len(vocab) != meta["vocab_size"]:
        raise CheckpointError(f"{d}: vocabulary has {len(vocab)} words, config says "
                              f"{meta['vocab_size']}")
    return cfg, vocab


def load_lm(directory: str | Path, device="cpu") -> tuple[LSTMLM, LSTMLMConfig, Vocab]:
    """Read a folder written by `save_lm`; the model comes back in eval mode on `device`."""
    d = Path(directory)
    cfg, vocab = _load_config_vocab(d)
    model = LSTMLM(len(vocab), cfg)
    try:
        model.load_state_dict(load_tensors(d / MODEL, device, "LSTM LM checkpoint"))
    except RuntimeError as e:
        raise CheckpointError(f"{d / MODEL} does not fit its config ({str(e)[:200]})") from None
    return model.to(device).eval(), cfg, vocab


# --- training ----------------------------------------------------------------------------------

def _same_recipe(a: LSTMLMConfig, b: LSTMLMConfig) -> bool:
    """Configs equal up to max_epochs (the one setting a resume may change)."""
    da, db = a.to_dict(), b.to_dict()
    da.pop("max_epochs"), db.pop("max_epochs")
    return da == db


def _rng_state(device) -> dict:
    st = {"cpu": torch.get_rng_state()}
    if torch.device(device).type == "cuda":
        st["cuda"] = torch.cuda.get_rng_state(device)
    return st


def _set_rng_state(st: dict, device) -> None:
    # The training state is loaded with map_location=device, which puts these ByteTensors on the
    # GPU too; both setters take a CPU ByteTensor.
    torch.set_rng_state(st["cpu"].cpu())
    if "cuda" in st and torch.device(device).type == "cuda":
        torch.cuda.set_rng_state(st["cuda"].cpu(), device)


def _clone_state(model: nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def train_lstm_lm(train: list[list[str]], valid: list[list[str]], vocab: Vocab,
                  cfg: LSTMLMConfig | None = None, device="cpu", progress: bool = True,
                  ckpt_dir: str | Path | None = None,
                  max_batches: int | None = None, on_epoch=None) -> tuple[LSTMLM, list[dict]]:
    """Train an LSTM LM on `train`, choosing weights and lr decays by perplexity on `valid`.

    Returns (model with the best-on-valid weights, in eval mode; history), history being one dict
    per epoch: epoch, train_ppl (with dropout, over the epoch), valid_ppl, lr (used in the epoch),
    train_tokens, train_seconds, tok_s, seconds (with validation), best. With an empty `valid`
    the lr never decays and the last weights are kept. With `ckpt_dir`, the run saves after every
    epoch and resumes there from the last finished one; the best model ends in `ckpt_dir` as a
    `save_lm` folder. `max_batches` cuts every epoch short (benchmarks and smoke tests).
    `on_epoch(history_line)` is called after each epoch (TensorBoard, logs).
    """
    cfg = cfg or LSTMLMConfig()
    device = torch.device(device)
    if cfg.precision == "auto":
        cfg = replace(cfg, precision=resolve_precision("auto", device)[0])
    ckpt = Path(ckpt_dir) if ckpt_dir is not None else None
    train_ids = [vocab.encode(s) for s in train]
    valid_ids = [vocab.encode(s) for s in valid]
    batches = Batches(train_ids, cfg.batch_size, seed=cfg.seed)

    torch.manual_seed(cfg.seed)
    model = LSTMLM(len(vocab), cfg).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr)
    st = {"epoch": 0, "lr": cfg.lr, "best_ppl": math.inf, "decays": 0, "bad_epochs": 0,
          "stop": "", "history": []}
    best = _clone_state(model)

    if ckpt is not None and (ckpt / TRAIN_STATE).is_file():
        saved_cfg, saved_vocab = _load_config_vocab(ckpt)
        if not _same_recipe(saved_cfg, cfg) or saved_vocab.itos != vocab.itos:
            raise CheckpointError(f"{ckpt} holds an LSTM LM run with another config or vocabulary; "
                                  "use another folder")
        payload = load_tensors(ckpt / TRAIN_STATE, device, "LSTM LM checkpoint")
        model.load_state_dict(payload["model"])
        best = payload["best"]
        st = payload["state"]
        _set_rng_state(payload["rng"], device)
        if st["stop"] == "max_epochs" and st["epoch"] < cfg.max_epochs:
            st["stop"] = ""  # a resume with a larger max_epochs continues
    elif ckpt is not None:
        ckpt.mkdir(parents=True, exist_ok=True)
        write_json(ckpt / CONFIG, {"lstm_lm": cfg.to_dict(), "vocab_size": len(vocab)})
        atomic_write(ckpt / VOCAB, ("\n".join(vocab.itos) + "\n").encode())

    n_batches = len(batches) if max_batches is None else min(len(batches), max_batches)
    bar = Bar("lstm-lm", n_batches) if progress else None
    try:
        while not st["stop"] and st["epoch"] < cfg.max_epochs:
            epoch = st["epoch"]
            for g in opt.param_groups:
                g["lr"] = st["lr"]
            t0 = time.perf_counter()
            model.train()
            nll_t = torch.zeros((), dtype=torch.float64, device=device)  # no sync per batch
            tokens = 0
            if bar:
                bar.restart(f"lstm-lm epoch {epoch + 1}")
            for b, ix in enumerate(batches.indices(epoch)[:n_batches]):
                x = frame([train_ids[i] for i in ix])
                ntok = int(scored_tokens(x).sum())
                lp = model.log_prob(x.to(device))
                loss = -lp.mean() if cfg.loss == "sentence" else -lp.sum() / ntok
                opt.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
                opt.step()
                nll_t -= lp.detach().double().sum()
                tokens += ntok
                if bar:
                    bar.update(b + 1, f"lr {st['lr']:g}  {tokens / (time.perf_counter() - t0):.0f}"
                                      f" tok/s  train ppl {math.exp(min(float(nll_t) / tokens, 700.0)):.1f}")
            nll = float(nll_t)
            if not math.isfinite(nll):
                raise FloatingPointError(f"epoch {epoch + 1}: training loss became NaN/inf; "
                                         f"lower the lr (now {st['lr']}) or the clip")
            train_s = time.perf_counter() - t0
            valid_ppl = None
            if valid_ids:
                v_nll, v_tok = _total_nll(model, valid_ids, device, 128, 4096)
                valid_ppl = math.exp(v_nll / v_tok)
            improved = valid_ppl is None or valid_ppl < st["best_ppl"]
            if improved:
                best = _clone_state(model)
                st["best_ppl"] = valid_ppl if valid_ppl is not None else math.inf
                st["bad_epochs"] = 0
            else:
                st["bad_epochs"] += 1
            st["history"].append({
                "epoch": epoch + 1, "train_ppl": math.exp(nll / tokens), "valid_ppl": valid_ppl,
                "lr": st["lr"], "train_tokens": tokens, "train_batches": n_batches,
                "train_seconds": train_s, "tok_s": tokens / train_s,
                "seconds": time.perf_counter() - t0, "best": improved})
            st["epoch"] = epoch + 1
            if not improved:
                if st["decays"] >= cfg.max_decays:
                    st["stop"] = "lr_decays"
                else:
                    st["lr"] *= cfg.lr_decay
                    st["decays"] += 1
            if cfg.patience and st["bad_epochs"] >= cfg.patience:
                st["stop"] = "patience"
            if not st["stop"] and st["epoch"] >= cfg.max_epochs:
                st["stop"] = "max_epochs"
            if bar:
                bar.note(_epoch_line(st["history"][-1]))
            if on_epoch:
                on_epoch(st["history"][-1])
            if ckpt is not None:
                atomic_write(ckpt / TRAIN_STATE, torch_bytes(
                    {"model": model.state_dict(), "best": best, "state": st,
                     "rng": _rng_state(device)}))
                write_json(ckpt / HISTORY, st["history"])
    finally:
        if bar:
            bar.close()

    if valid_ids:
        model.load_state_dict(best)
    model.eval()
    if ckpt is not None:
        save_lm(ckpt, model, cfg, vocab)
    return model, copy.deepcopy(st["history"])


def _epoch_line(h: dict) -> str:
    v = f"{h['valid_ppl']:.2f}" if h["valid_ppl"] is not None else "-"
    return (f"lstm-lm epoch {h['epoch']}: train ppl {h['train_ppl']:.2f}  valid ppl {v}"
            f"{' *' if h['best'] else ''}  lr {h['lr']:g}  {h['tok_s']:.0f} tok/s  {h['seconds']:.0f} s")
