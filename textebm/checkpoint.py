"""Run folders: atomic saves and safe loads of state_dicts, config JSON and vocabulary.

A run folder holds `config.json`, `vocab.txt`, `checkpoint.pt` and `metrics.jsonl`. The checkpoint
is one file with everything a resume needs, so weights and RNG states can never come from two
different steps: state_dicts of the model and optimisers, the step, every RNG state (torch, CUDA
where present, python, numpy) and any further training state (the persistent-chain bank);
tensors and plain containers only, so it loads with `torch.load(weights_only=True)`.
Every write goes to a temporary file that is then renamed, so an interrupted save never leaves a
half-written checkpoint behind.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import torch

from common.storage import (CheckpointError, atomic_write, load_tensors, torch_bytes,  # noqa: F401
                             write_json)
from corpora.vocab import Vocab
from textebm.config import RunConfig

CHECKPOINT, CONFIG, VOCAB = "checkpoint.pt", "config.json", "vocab.txt"


def save_run_files(run_dir: Path, cfg: RunConfig, vocab: Vocab) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / CONFIG, cfg.to_dict())
    atomic_write(run_dir / VOCAB, ("\n".join(vocab.itos) + "\n").encode())


def save_checkpoint(run_dir: Path, model: torch.nn.Module, optimizers: dict, step: int,
                    extra: dict | None = None) -> None:
    """`extra`: further tensors of the training state (the persistent-chain bank)."""
    payload = {"model": model.state_dict(),
               "optimizers": {k: o.state_dict() for k, o in optimizers.items()},
               "step": step, "torch_rng": torch.get_rng_state(), **(extra or {})}
    if torch.cuda.is_available():
        payload["cuda_rng"] = torch.cuda.get_rng_state_all()
    py_state = random.getstate()
    payload["python_rng"] = [py_state[0], list(py_state[1]), py_state[2]]
    payload["numpy_rng"] = _np_state()
    atomic_write(run_dir / CHECKPOINT, torch_bytes(payload))


def _np_state() -> dict:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"name": name, "keys": keys.tolist(), "pos": pos, "has_gauss": has_gauss,
            "cached": cached}


def restore_rng(run_dir: Path, payload: dict) -> None:
    torch.set_rng_state(payload["torch_rng"].cpu())
    if "cuda_rng" in payload and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in payload["cuda_rng"]])
    if "python_rng" not in payload:
        raise CheckpointError(f"{run_dir}: the checkpoint holds no random-number states (saved by "
                              "a textebm older than resumable runs); it can be read, not resumed")
    state = payload
    v, internal, g = state["python_rng"]
    random.setstate((v, tuple(internal), g))
    n = state["numpy_rng"]
    np.random.set_state((n["name"], np.array(n["keys"], dtype=np.uint32), n["pos"],
                         n["has_gauss"], n["cached"]))


def load_checkpoint(run_dir: Path, map_location="cpu") -> dict:
    return load_tensors(Path(run_dir) / CHECKPOINT, map_location, "textebm checkpoint")


def load_run_files(run_dir: Path) -> tuple[RunConfig, Vocab]:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"no run folder at {run_dir}")
    try:
        cfg = RunConfig.from_dict(json.loads((run_dir / CONFIG).read_text()))
        vocab = Vocab.load(run_dir / VOCAB)
    except FileNotFoundError as e:
        raise CheckpointError(f"{run_dir} lacks {Path(e.filename).name}: not a textebm run") from None
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"{run_dir}: unreadable config or vocabulary ({e})") from None
    if len(vocab) != cfg.decoder.vocab_size:
        raise CheckpointError(f"{run_dir}: vocabulary has {len(vocab)} words but the model "
                              f"expects {cfg.decoder.vocab_size}")
    return cfg, vocab
