"""Exponential moving average of the model's weights (train.ema), the weights a trained run is read with.

The decoder (lr 3e-3, Adam beta1 0.5) and the EBM end a run mid-swing: the energies still move by
tens in its last iterations, so what a run samples depends on where its last step happened to
land. An average over the last few hundred iterations is a steadier model (Polyak averaging).
Training itself never reads the average: it only follows the weights, so a run with ema on learns
exactly what the same run with ema off learns.
"""
from __future__ import annotations

import torch

EMA_KEY = "ema"  # where a checkpoint keeps the averaged state_dict


def ema_init(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the model's state_dict to average into."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def ema_decay(decay: float, step: int) -> float:
    """The decay at optimizer step `step` (1-based): min(decay, (1 + step) / (10 + step)), so
    the first iterations, whose weights are far from the end's, are forgotten quickly. The bound
    acts until (1 + k) / (10 + k) reaches `decay`: for 0.995 up to iteration 1,790, so a 1,500-step
    demo run averages with (1 + k) / (10 + k) throughout (at its end a memory of about the last
    170 iterations), and any decay above 0.994 gives that run the same average."""
    return min(decay, (1.0 + step) / (10.0 + step))


@torch.no_grad()
def ema_update(avg: dict[str, torch.Tensor], model: torch.nn.Module, decay: float, step: int) -> None:
    """avg <- d * avg + (1 - d) * weights, d = ema_decay(decay, step); integer buffers are copied."""
    d = ema_decay(decay, step)
    for k, v in model.state_dict().items():
        if v.is_floating_point():
            avg[k].lerp_(v, 1.0 - d)
        else:
            avg[k].copy_(v)
