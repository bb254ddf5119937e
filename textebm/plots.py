"""Training curves from metrics.jsonl (matplotlib, no display needed)."""
from __future__ import annotations

import warnings
from pathlib import Path

from common.storage import read_jsonl


def read_metrics(path: Path) -> tuple[list[dict], list[dict]]:
    """(training lines, validation lines) of a metrics.jsonl; a line cut short is skipped with a
    warning."""
    steps, evals = [], []
    for m in read_jsonl(path, warn=lambda msg: warnings.warn(msg, RuntimeWarning)):
        (evals if m.get("kind") == "eval" else steps).append(m)
    return steps, evals


def _smooth(v: list[float], w: int) -> list[float]:
    out, acc = [], 0.0
    for i, x in enumerate(v):
        acc += x - (v[i - w] if i >= w else 0.0)
        out.append(acc / min(i + 1, w))
    return out


def plot_curves(metrics: Path, png: Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps, evals = read_metrics(metrics)
    if not steps:
        return png
    w = max(1, len(steps) // 50)
    xs = [m["step"] for m in steps]
    fig, ax = plt.subplots(1, 3, figsize=(14, 3.8))
    ax[0].plot(xs, _smooth([m["nll_tok"] for m in steps], w), label="train (z+ from posterior)")
    if evals:
        ax[0].plot([e["step"] for e in evals], [e["val_recon_nll_tok"] for e in evals], "o-",
                   label="valid, z from posterior")
        if "val_random_z_nll_tok" in evals[0]:
            ax[0].plot([e["step"] for e in evals], [e["val_random_z_nll_tok"] for e in evals],
                       "x--", label="valid, z ~ N(0, I)")
    ax[0].set(title="decoder NLL per token (nats)", xlabel="step")
    ax[0].legend()
    # The prior's curves start where the EBM starts learning (train.prior_start).
    learned = [m for m in steps if "e_pos" in m]
    if learned:
        lx = [m["step"] for m in learned]
        ax[1].plot(lx, _smooth([m["e_pos"] for m in learned], w), label="E(z+) posterior")
        ax[1].plot(lx, _smooth([m["e_neg"] for m in learned], w), label="E(z-) prior")
        ax[1].legend()
    ax[1].set(title="energy E(z) = -f(z)", xlabel="step")
    ax[2].plot(xs, _smooth([m["z_pos_norm"] for m in steps], w), label="|z+|")
    neg = [m for m in steps if "z_neg_norm" in m]
    ax[2].plot([m["step"] for m in neg], _smooth([m["z_neg_norm"] for m in neg], w), label="|z-|")
    ax[2].set(title="latent norms", xlabel="step")
    ax[2].legend()
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return png
