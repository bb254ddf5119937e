"""Numeric precision of the LSTMs and output softmaxes: fp32, bf16, or auto.

bf16 means bf16 *compute* with fp32 master weights: the LSTM runs under autocast and the two big
matmuls of the output softmax (common.softmax) take bf16 inputs, while the log-sum-exp
normaliser, log-probabilities, energies, the Langevin state z and every optimizer update stay
fp32. `auto` picks bf16 only where it is fast here: on CUDA where the GPU supports it; on CPU
where oneDNN reports bf16 support and a short calibration (an output-softmax-sized matmul, timed
both ways) shows bf16 at least 1.5x faster. CPUs without bf16 units emulate it more slowly than
fp32, and those exist among our machines.
"""
from __future__ import annotations

import contextlib
import functools
import time

import torch

PRECISIONS = ("fp32", "bf16", "auto")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
MIN_SPEEDUP = 1.5  # bf16 must beat fp32 by this much in calibration for `auto` to pick it


def cpu_name() -> str:
    """The CPU's model name, recorded in timing rows: bf16 speed (and so `auto`'s pick and any
    time-to-quality) differs between CPUs, so rows from different CPUs are not compared by time."""
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform
    return platform.processor() or "unknown"


def _calibrate(device: torch.device, reps: int = 3) -> float:
    """fp32 time / bf16 time of a (1024 x 512) x (512 x 8192) product on `device`, through the
    output softmax's own kernel (oneDNN on CPU), the one bf16 would speed up."""
    from common.softmax import _linear
    gen = torch.Generator(device=device).manual_seed(0)
    h = torch.randn(1024, 512, device=device, generator=gen)
    w = torch.randn(8192, 512, device=device, generator=gen)

    def best(dtype):
        a, b = h.to(dtype), w.to(dtype)
        times = []
        for _ in range(reps + 1):  # the first call warms up
            if device.type == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            _linear(a, b, None)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t)
        return min(times[1:])
    return best(torch.float32) / best(torch.bfloat16)


def resolve(precision: str, device: torch.device | str) -> tuple[str, str]:
    """The precision to run ("fp32" or "bf16") for a request, and why. Raises ValueError.
    Decided once per process and device: `auto`'s calibration is timed once, so every part of
    a process (the model, the judge LMs) computes in the same precision."""
    return _resolve(precision, str(torch.device(device)))


@functools.lru_cache(maxsize=None)
def _resolve(precision: str, device_name: str) -> tuple[str, str]:
    device = torch.device(device_name)
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError("this GPU does not support bf16; use --precision fp32 or auto")
    if precision != "auto":
        return precision, "asked for"
    if device.type == "cuda":
        ok = torch.cuda.is_bf16_supported()
        return ("bf16", "GPU supports bf16") if ok else ("fp32", "GPU without bf16")
    if device.type != "cpu":
        return "fp32", f"no bf16 calibration for {device.type}"
    if not (torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()):
        return "fp32", "CPU without bf16 support in oneDNN"
    speedup = _calibrate(device)
    if speedup >= MIN_SPEEDUP:
        return "bf16", f"bf16 matmul {speedup:.2f}x faster than fp32 here"
    return "fp32", f"bf16 matmul only {speedup:.2f}x faster than fp32 here (< {MIN_SPEEDUP})"


def autocast(device_type: str, dtype: torch.dtype):
    """Autocast to `dtype` for the LSTMs where it is bf16; a no-op context for fp32."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type, dtype=dtype)
