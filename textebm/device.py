"""Choose the torch device once, at the edge; everything below receives it.

Under torchrun every process sees every GPU of its node; `LOCAL_RANK` (set by torchrun) says
which one is this process's. `pick_device` and `distributed.init` both place a CUDA process on
`cuda:LOCAL_RANK` and make it the current device (torch.cuda.set_device), so that NCCL, the
caching allocator and every `device="cuda"` tensor land on the rank's own GPU rather than all on
cuda:0. Nothing here touches CUDA unless a CUDA device is asked for.
"""
from __future__ import annotations

import os

import torch


def local_rank() -> int | None:
    """This process's GPU index on its node under torchrun (`LOCAL_RANK`), else None."""
    value = os.environ.get("LOCAL_RANK")
    if value is None or value.strip() == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"LOCAL_RANK must be an integer, got {value!r}") from None


def rank_device(device: torch.device) -> torch.device:
    """`device` as this process should use it: for CUDA under torchrun, `cuda:LOCAL_RANK`, made
    the current device; anything else unchanged (a CUDA device without LOCAL_RANK too)."""
    device = torch.device(device)
    rank = local_rank()
    if device.type != "cuda" or rank is None:
        return device
    count = torch.cuda.device_count()
    if not 0 <= rank < count:
        raise ValueError(f"LOCAL_RANK={rank}, but this process sees {count} CUDA device(s); run "
                         f"at most {count} processes per node (--nproc_per_node) or check "
                         f"CUDA_VISIBLE_DEVICES")
    if device.index is not None and device.index != rank:
        raise ValueError(f"--device {device} disagrees with LOCAL_RANK={rank}: under torchrun "
                         f"pass --device cuda and each process takes its own GPU")
    torch.cuda.set_device(rank)
    return torch.device("cuda", rank)


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available")
    if name not in ("cpu", "cuda"):
        raise ValueError(f"--device must be auto, cpu or cuda, got {name!r}")
    return rank_device(torch.device(name))
