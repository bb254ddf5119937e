"""Scoring sentences with a trained model: per sentence, the importance-weighted log p(x)
(textebm.nll: log Z by AIS, AIS from a fitted proposal) or, fast, log p_alpha(z) + log p(x|z) at
the posterior z (the run's reading chain) without log Z, the paper's §4.4 anomaly score.

A sentence the model finds unlikely scores low under either; `auroc` measures how well a score
separates two sets (e.g. real sentences from corrupted copies).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from corpora.vocab import UNK_ID
from textebm.api import TextEBM
from textebm.nll import NLLConfig, importance_nll


def score_sentences(tm: TextEBM, sentences: Sequence[str | Sequence[str]], fast: bool = False,
                    cfg: NLLConfig = NLLConfig(), seed: int = 0) -> tuple[list[dict], dict]:
    """One dict per sentence, in input order: sentence, tokens (scored, `</s>` included), unk
    (unknown words read as `<unk>`), and `log_p` (importance-weighted log p(x); with `fast`,
    `log_p_xz` = log p_alpha(z) + log p(x|z) at the posterior z, up to log Z(alpha)), and that
    per token. Also returns what the scores share (log Z and its spread; the method)."""
    enc = tm.encode(sentences)
    tokens = [len(s) + 1 for s in enc.ids]
    unk = [sum(i == UNK_ID for i in s) for s in enc.ids]
    if fast:
        scores = tm.log_joint(sentences, tm.infer(sentences, seed=seed)).tolist()
        key, shared = "log_p_xz", {"method": "log p(x, z) at the posterior z (no log Z)"}
    else:
        res = importance_nll(tm.model, enc.ids, cfg)
        scores = [-v for v in res["per_sentence"]["nll"]]
        key = "log_p"
        shared = {"method": res["estimator"], "log_z": res["log_z"],
                  "log_z_spread": res["log_z_estimate"].get("spread", 0.0),
                  "floor_violations": res["floor"]["violations"], "ess_median": res["ess"]["median"]}
    rows = [{"sentence": " ".join(s) if not isinstance(s, str) else s, "tokens": n, "unk": u,
             key: v, f"{key}_per_token": v / n}
            for s, n, u, v in zip(sentences, tokens, unk, scores)]
    return rows, shared


def auroc(positive: Sequence[float], negative: Sequence[float]) -> float:
    """P(a positive scores above a negative), ties counting half: the area under the ROC."""
    p, n = np.asarray(positive, float), np.asarray(negative, float)
    greater = (p[:, None] > n[None, :]).sum() + 0.5 * (p[:, None] == n[None, :]).sum()
    return float(greater / (len(p) * len(n)))
