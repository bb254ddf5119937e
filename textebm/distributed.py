"""Data-parallel training under torchrun: one model, its global batch split over processes.

    torchrun --standalone --nproc_per_node=2 $(which textebm) train demo --device cpu

Each rank runs the prior and posterior chains for its share of every global batch (the same
batches as one process would see, split round-robin), computes the three losses on that share,
and the gradients are summed over ranks with weights share/global before clipping and each
optimizer step, so every rank applies the same update to the same weights: the gradient of
the loss of the whole global batch. Rank 0 alone writes the run folder, metrics, checkpoints
and validations. Backend: gloo on CPU, nccl on CUDA. Without torchrun (WORLD_SIZE unset or 1)
everything here is a no-op.

Each process computes on its own GPU, `cuda:LOCAL_RANK` (textebm.device.rank_device): `init`
returns it as `Ranks.device` and makes it the current CUDA device before the process group
starts, so that NCCL's communicator, `barrier` and `broadcast_object` use the rank's GPU.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from textebm.device import rank_device


@dataclass(frozen=True)
class Ranks:
    """Where this process stands: rank r of `world` processes, computing on `device` (None: not
    given, as in a Ranks made by hand)."""
    rank: int = 0
    world: int = 1
    device: torch.device | None = None

    @property
    def main(self) -> bool:
        return self.rank == 0

    def share(self, ix):
        """This rank's part of a global batch of indices (round-robin over ranks)."""
        return ix[self.rank::self.world]


def init(device: torch.device) -> Ranks:
    """Join the process group torchrun describes in the environment (no-op without it).

    Returns this process's place and the device it computes on (`Ranks.device`): for CUDA under
    torchrun `cuda:LOCAL_RANK`, already made the current device; otherwise `device` itself."""
    device = rank_device(device)
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Ranks(device=device)
    if not dist.is_initialized():
        if device.type == "cuda":
            # device_id binds the communicator to the rank's GPU (no guessing from the current
            # device in barrier()).
            dist.init_process_group("nccl", device_id=device)
        else:
            dist.init_process_group("gloo")
    return Ranks(dist.get_rank(), dist.get_world_size(), device)


def close() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def broadcast_object(obj, ranks: Ranks):
    """Rank 0's value of a picklable object (a run folder name) on every rank."""
    if ranks.world == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def broadcast_parameters(module: torch.nn.Module, ranks: Ranks) -> None:
    """Start every rank from rank 0's weights."""
    if ranks.world == 1:
        return
    for t in module.state_dict().values():
        dist.broadcast(t, src=0)


def barrier(ranks: Ranks) -> None:
    if ranks.world > 1:
        dist.barrier()


def sum_gradients(params, weight: float, ranks: Ranks) -> None:
    """p.grad <- sum over ranks of weight_r * p.grad_r, in one flat all-reduce.

    With weight_r = (rank r's rows) / (global rows) and per-rank mean losses, that is the
    gradient of the mean loss over the global batch."""
    if ranks.world == 1:
        return
    grads = [p.grad for p in params if p.grad is not None]
    flat = torch.cat([g.reshape(-1) for g in grads]) * weight
    dist.all_reduce(flat)
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()
