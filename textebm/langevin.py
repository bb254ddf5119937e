"""Short-run Langevin dynamics: the one place where the update rule lives (PROTOCOL.md §2).

For a target pi(z) ∝ exp(-U(z)) and step size s:

    z_{k+1} = z_k - (s_k^2 / 2) * dU/dz(z_k) + c * s_k * eps_k,    eps_k ~ N(0, I)

This is the paper's eq. 9 with its step s' = s^2/2, so s is the "step size" of paper Table 5
(s0 = 0.4 for the prior, s1 = 0.1 for the posterior). Two options widen the rule without a
second copy of it:
  - `step_size` may be a schedule (s_0, s_1, ...): step k uses s_k, and the last value repeats;
  - `noise` (c above) scales the injected noise; c = 1 is Langevin, c < 1 samples a colder
    target (about exp(-U / c^2)), c = 0 is gradient descent on U (a deterministic chain).
`U` returns one energy per chain; they are summed before the gradient, so each chain moves
independently of the batch it sits in. Where the chain starts is the caller's choice (N(0, I)
in the paper; a warm start or an amortized guess are options of the posterior chain).

`mala_step` / `mala_chain` add a Metropolis-Hastings test to the same rule at noise 1, so that
exp(-U) itself is the chain's stationary law at any step size (`propose` and `accept` are its two
halves, shared with the AIS transitions of textebm.ais); `descend` is Adam on U, for modes,
floors and the deepest wells of a prior.

`CompiledChain` runs the same rule with each step (energy, its gradient and the update) compiled
by torch.compile into one graph: the prior chain is hundreds of steps of a small MLP at a fixed
shape, so in eager mode it costs per-operator overhead (and, on a GPU, kernel launches) rather
than arithmetic. Its noise is drawn outside the graph from the same generator in the same order,
so it follows the eager chain to float rounding.

`GraphChain` runs it on a GPU as one CUDA graph per chain shape: the eager chain is about 40
operators per step (200 steps: 8,000 kernel launches, most of an iteration's), the graph one
launch. `make_prior_chain(energy, device, compile)` picks the chain a prior should run.
"""
from __future__ import annotations

import itertools
import math
import os
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

Energy = Callable[[torch.Tensor], torch.Tensor]


def step_sizes(steps: int, step_size: float | Sequence[float]) -> list[float]:
    """The step size used at each of `steps` steps; a schedule's last value repeats."""
    if isinstance(step_size, (int, float)):
        return [float(step_size)] * steps
    sched = [float(s) for s in step_size]
    if not sched:
        raise ValueError("an empty step-size schedule")
    return [sched[min(k, len(sched) - 1)] for k in range(steps)]


def langevin(energy: Energy, z: torch.Tensor, steps: int, step_size: float | Sequence[float],
             generator: torch.Generator | None = None, trace: bool = False,
             trace_at: tuple[int, ...] = (), noise: float = 1.0,
             record: Energy | None = None) -> tuple[torch.Tensor, dict]:
    """Run `steps` Langevin steps on `U = energy` from z: (B, D). Gradients are w.r.t. z only.

    Returns the final z (detached) and a dict with, if `trace`, `energies`: (steps+1, B) U along
    the chain (or `record(z_k)` where given, e.g. E(z) without the Gaussian term), and, for each
    k in `trace_at`, `z_at[k]`: (B, D) the state after k steps.
    """
    info: dict = {"energies": [], "z_at": {}}
    z = z.detach()
    sizes = step_sizes(steps, step_size)
    with torch.enable_grad():
        for k in range(steps + 1):
            if k in trace_at:
                info["z_at"][k] = z
            if k == steps and not trace:
                break
            z = z.requires_grad_(True)
            u = energy(z)
            if trace:
                info["energies"].append((u if record is None else record(z)).detach())
            if k == steps:
                break
            (grad,) = torch.autograd.grad(u.sum(), z)
            z = _update(z.detach(), grad, sizes[k], noise, _noise(z, noise, generator))
    if trace:
        info["energies"] = torch.stack(info["energies"])
    return z.detach(), info


def _update(z: torch.Tensor, grad: torch.Tensor, s: float, noise: float,
            eps: torch.Tensor | None) -> torch.Tensor:
    """One step of the rule above, given dU/dz and the step's eps (None: no noise)."""
    z = z - (0.5 * s * s) * grad
    return z if eps is None else z + (noise * s) * eps


def _noise(z: torch.Tensor, noise: float, generator: torch.Generator | None) -> torch.Tensor | None:
    return (torch.randn(z.shape, generator=generator, device=z.device, dtype=z.dtype)
            if noise else None)


class CompiledChain:
    """`langevin(energy, z, steps, step_size, generator, noise=...)` without tracing, each step
    compiled (torch.compile; it recompiles for a new batch shape, then treats the batch size as
    dynamic). If compiling fails (no C++ compiler, an unsupported operator) it warns once and
    runs the eager chain from then on: the result is the same chain either way."""

    def __init__(self, energy: Energy):
        self.energy = energy
        self.failed: str | None = None
        self._step = torch.compile(self._eager_step)

    def _eager_step(self, z: torch.Tensor, s: float, noise: float,
                    eps: torch.Tensor | None) -> torch.Tensor:
        grad = torch.func.grad(lambda v: self.energy(v).sum())(z)
        return _update(z, grad, s, noise, eps)

    def __call__(self, z: torch.Tensor, steps: int, step_size: float | Sequence[float],
                 generator: torch.Generator | None = None, noise: float = 1.0
                 ) -> tuple[torch.Tensor, dict]:
        if self.failed is None:
            rng = _rng_state(generator, z.device)
            try:
                out = z.detach()
                # no_grad: the step's gradient is w.r.t. z only (torch.func.grad ignores the outer
                # mode); without it z would carry the chain's graph back to the EBM's weights.
                with torch.no_grad():
                    for s in step_sizes(steps, step_size):
                        out = self._step(out, s, noise, _noise(out, noise, generator))
                return out, {"energies": [], "z_at": {}}
            except Exception as e:  # the compiler's failures come in many types
                self.failed = f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:200]}"
                warnings.warn(f"compiled Langevin chain unavailable, running eagerly ({self.failed})",
                              RuntimeWarning)
                _set_rng_state(generator, z.device, rng)  # the eager chain draws the same noise
        return langevin(self.energy, z, steps, step_size, generator, noise=noise)


@dataclass
class _Captured:
    replay: Callable[[], None]
    z0: torch.Tensor            # the graph's input buffer
    out: torch.Tensor           # and its output buffer
    pointers: tuple             # the energy's parameters and buffers when it was captured


class GraphChain:
    """`langevin(energy, z0, steps, step_size, generator, noise=noise)` without tracing, on a
    CUDA device as one captured CUDA graph per (shape, dtype, step sizes, noise, generator):
    z0 is copied into the graph's input buffer, the graph is replayed (one launch for the whole
    chain: every step's energy, gradient, noise draw and update), and its output is copied out.

    The graph holds the same kernels as the eager chain, noise included: each replay draws from
    the generator (the default CUDA one, or `generator`, registered with the graph where torch
    supports it) at its current offset and moves it on as the eager chain would, so replays
    follow the eager chain to float rounding and leave the random stream where it would leave
    it. The first call for a shape runs the eager chain (on a side stream: the warm-up a
    capture needs; its result is that call's answer), then captures the graph and checks it by
    replaying the same draws: a graph that lands elsewhere (or a capture that fails) warns once
    and the chain runs eagerly from then on, as `CompiledChain` does. The energy must read only
    tensors that keep their storage (parameters updated in place by the optimizer, buffers
    updated with copy_): the graph reads them by address, and a change of address (the model
    moved, weights replaced) is noticed and the graph captured again.

    Untested on hardware: no GPU was lent while it was written. On a CPU (or any non-CUDA
    device) it is the eager chain, and `tests/test_gpu_ready.py` runs its capture logic with a
    stand-in for the graph."""

    MAX_GRAPHS = 4   # shapes kept captured (a training run has two: its batch and the last one)

    def __init__(self, energy: Energy):
        self.energy = energy
        self.failed: str | None = None
        self.max_diff: float | None = None      # replay against eager at the last capture
        self._graphs: OrderedDict = OrderedDict()
        self._streams: dict = {}

    def __call__(self, z: torch.Tensor, steps: int, step_size: float | Sequence[float],
                 generator: torch.Generator | None = None, noise: float = 1.0
                 ) -> tuple[torch.Tensor, dict]:
        if self.failed is not None or not self._usable(z, generator):
            return langevin(self.energy, z, steps, step_size, generator, noise=noise)
        sizes, noise = tuple(step_sizes(steps, step_size)), float(noise)
        key = (tuple(z.shape), z.dtype, str(z.device), sizes, noise,
               None if generator is None else id(generator))
        pointers = self._pointers()
        entry = self._graphs.get(key)
        if entry is not None and entry.pointers == pointers:
            self._graphs.move_to_end(key)
            entry.z0.copy_(z.detach())
            entry.replay()
            return entry.out.clone(), {"energies": [], "z_at": {}}
        return self._first(key, pointers, z.detach(), sizes, noise, generator), {"energies": [],
                                                                                  "z_at": {}}

    def _body(self, z: torch.Tensor, sizes: Sequence[float], noise: float,
              generator: torch.Generator | None) -> torch.Tensor:
        """The eager chain of `langevin` (no trace), op for op: what the graph captures."""
        with torch.enable_grad():
            for s in sizes:
                z = z.detach().requires_grad_(True)
                (grad,) = torch.autograd.grad(self.energy(z).sum(), z)
                z = _update(z.detach(), grad, s, noise, _noise(z, noise, generator))
        return z.detach()

    def _first(self, key, pointers, z0, sizes, noise, generator) -> torch.Tensor:
        """The eager chain (this call's result), then the graph captured and checked."""
        dev = z0.device
        before = _rng_state(generator, dev)
        out = self._warm(lambda: self._body(z0, sizes, noise, generator), dev)
        after = _rng_state(generator, dev)
        try:
            static_in, static_out = z0.clone(), torch.empty_like(z0)

            def run():
                static_out.copy_(self._body(static_in, sizes, noise, generator))

            replay = self._capture(run, dev, generator)
            _set_rng_state(generator, dev, before)   # the warm-up's draws, replayed by the graph
            replay()
            same = torch.allclose(static_out, out, rtol=1e-4, atol=1e-5, equal_nan=True)
            diff = (static_out - out).abs().nan_to_num().max() if out.numel() else out.new_zeros(())
            self.max_diff = float(diff)
            if not bool(same):
                raise RuntimeError(f"the replayed chain differs from the eager one by up to "
                                   f"{self.max_diff:.3g}")
            self._graphs[key] = _Captured(replay, static_in, static_out, pointers)
            while len(self._graphs) > self.MAX_GRAPHS:
                self._graphs.popitem(last=False)
        except Exception as e:  # capture's failures come in many types
            self.failed = f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:200]}"
            self._graphs.clear()
            warnings.warn(f"CUDA-graph prior chain unavailable, running eagerly ({self.failed})",
                          RuntimeWarning)
        finally:
            _set_rng_state(generator, dev, after)   # where the eager chain left the stream
        return out

    def _pointers(self) -> tuple:
        """Addresses of the tensors a bound method's module holds (what the graph reads)."""
        owner = getattr(self.energy, "__self__", None)
        if not isinstance(owner, torch.nn.Module):
            return ()
        return tuple(t.data_ptr() for t in itertools.chain(owner.parameters(), owner.buffers()))

    # ---- the CUDA-only parts (a test stands in for them on CPU) ----------------------------
    def _usable(self, z: torch.Tensor, generator: torch.Generator | None) -> bool:
        if z.device.type != "cuda":
            return False
        # A generator of its own must be registered with the graph (torch >= 2.5 has it).
        return generator is None or hasattr(torch.cuda.CUDAGraph, "register_generator_state")

    def _stream(self, dev: torch.device):
        if dev not in self._streams:
            self._streams[dev] = torch.cuda.Stream(dev)
        return self._streams[dev]

    def _warm(self, fn: Callable[[], torch.Tensor], dev: torch.device) -> torch.Tensor:
        """fn() on the side stream the capture will use (lazy initialisation happens there)."""
        current, side = torch.cuda.current_stream(dev), self._stream(dev)
        side.wait_stream(current)
        with torch.cuda.stream(side):
            out = fn()
        current.wait_stream(side)
        out.record_stream(current)
        return out

    def _capture(self, run: Callable[[], None], dev: torch.device,
                 generator: torch.Generator | None) -> Callable[[], None]:
        graph = torch.cuda.CUDAGraph()
        if generator is not None:
            graph.register_generator_state(generator)
        current, side = torch.cuda.current_stream(dev), self._stream(dev)
        side.wait_stream(current)
        with torch.cuda.graph(graph, stream=side):
            run()
        current.wait_stream(side)
        return graph.replay


def make_prior_chain(energy: Energy, device: torch.device | str, compile: bool = False
                     ) -> GraphChain | CompiledChain | None:
    """The chain a prior with energy U = `energy` runs on `device`: a `GraphChain` on CUDA
    (unless TEXTEBM_CUDA_GRAPHS=0), a `CompiledChain` elsewhere when `compile`, else None: the
    caller runs the eager `langevin`. Each is called as `chain(z0, steps, step_size, generator,
    noise) -> (z, info)` for chains without tracing; a traced chain (energies, z_at) is always
    the eager `langevin`. Builds nothing on the device."""
    if torch.device(device).type == "cuda" and os.environ.get("TEXTEBM_CUDA_GRAPHS", "1") != "0":
        return GraphChain(energy)
    if compile:
        return CompiledChain(energy)
    return None


def _rng_state(generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    if generator is not None:
        return generator.get_state()
    return torch.cuda.get_rng_state(device) if device.type == "cuda" else torch.get_rng_state()


def _set_rng_state(generator: torch.Generator | None, device: torch.device,
                   state: torch.Tensor) -> None:
    if generator is not None:
        generator.set_state(state)
    elif device.type == "cuda":
        torch.cuda.set_rng_state(state, device)
    else:
        torch.set_rng_state(state)


def init_z(n: int, dim: int, device: torch.device | str = "cpu",
           generator: torch.Generator | None = None, dtype: torch.dtype | None = None) -> torch.Tensor:
    """z_0 ~ N(0, I): (n, dim)."""
    return torch.randn(n, dim, generator=generator, device=device, dtype=dtype)


def mala_step(energy: Energy, z: torch.Tensor, u: torch.Tensor, grad: torch.Tensor,
              step: torch.Tensor | float, generator: torch.Generator | None = None
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One Metropolis-adjusted Langevin step (MALA) on U = energy: the rule above at noise 1,
    then accept or reject, so that exp(-U) itself is left invariant (a chain without the
    correction samples a distribution biased by its step size).

    z: (B, D) with U(z): (B,) and dU/dz: (B, D) (from `energy_and_grad`, so a chain pays one
    energy evaluation per step); step: a float or (B, 1) per-chain step sizes s. Returns the new
    (z, U, dU/dz) and the accepted mask (B,).
    """
    prop = propose(z, grad, step, generator)
    u_p, g_p = energy_and_grad(energy, prop)
    ok = accept(z, prop, u, u_p, grad, g_p, step, generator)
    okd = ok.unsqueeze(-1)
    return torch.where(okd, prop, z), torch.where(ok, u_p, u), torch.where(okd, g_p, grad), ok


def mala_chain(energy: Energy, z: torch.Tensor, steps: int, step_size: float,
               generator: torch.Generator | None = None, target_accept: float = 0.6,
               trace_at: tuple[int, ...] = ()) -> tuple[torch.Tensor, dict]:
    """`steps` MALA steps on U = energy from z: (B, D): a chain whose stationary law is exp(-U)
    itself, at any step size. The step size (shared by the chains) is tuned towards
    `target_accept` over the first half of the steps and then frozen. Returns the final z and
    {"accept": the frozen half's acceptance rate, "step_size": the frozen step size,
    "z_at": {k: z after k steps} for k in trace_at}.

    The step size and the acceptance tally are float64 tensors on z's device, read back once at
    the end (a read per step would make the host wait for a GPU at every step)."""
    u, g = energy_and_grad(energy, z)
    s = torch.full((), float(step_size), dtype=torch.float64, device=z.device)
    tally = torch.zeros((), dtype=torch.float64, device=z.device)
    z_at, frozen = {}, steps - steps // 2
    for k in range(steps + 1):
        if k in trace_at:
            z_at[k] = z
        if k == steps:
            break
        z, u, g, ok = mala_step(energy, z, u, g, s, generator)
        rate = ok.float().mean().double()
        if k < steps // 2:
            s = s * torch.exp(0.5 * (rate - target_accept))
        else:
            tally = tally + rate
    tally, s = torch.stack([tally, s]).tolist()
    return z.detach(), {"accept": tally / frozen if frozen else math.nan, "step_size": s,
                        "z_at": z_at, "energies": []}


def propose(z: torch.Tensor, grad: torch.Tensor, step: torch.Tensor | float,
            generator: torch.Generator | None) -> torch.Tensor:
    """MALA's proposal z' = z - (s^2/2) dU/dz + s eps: the rule above at noise 1. (B, D)"""
    eps = torch.randn(z.shape, generator=generator, device=z.device, dtype=z.dtype)
    return _update(z, grad, step, 1.0, eps).detach()


def accept(z: torch.Tensor, prop: torch.Tensor, u: torch.Tensor, u_p: torch.Tensor,
           grad: torch.Tensor, g_p: torch.Tensor, step: torch.Tensor | float,
           generator: torch.Generator | None) -> torch.Tensor:
    """Metropolis-Hastings test of `propose`'s move z -> prop given U and dU/dz at both ends:
    accept with probability min(1, exp(U(z) - U(z')) q(z|z') / q(z'|z)). -> (B,) bool."""
    s2 = torch.as_tensor(step, dtype=z.dtype, device=z.device) ** 2
    fwd = (prop - z + 0.5 * s2 * grad).pow(2).sum(-1)                  # -2 s^2 log q(z'|z) + c
    bwd = (z - prop + 0.5 * s2 * g_p).pow(2).sum(-1)
    log_ratio = (u - u_p) + (fwd - bwd) / (2 * s2.reshape(-1))
    uniform = torch.rand(u.shape, generator=generator, device=z.device, dtype=z.dtype)
    return uniform.log() < log_ratio


def energy_and_grad(energy: Energy, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """U(z): (B,) and dU/dz: (B, D), both detached."""
    with torch.enable_grad():
        z = z.detach().requires_grad_(True)
        u = energy(z)
        (grad,) = torch.autograd.grad(u.sum(), z)
    return u.detach(), grad.detach()


def descend(energy: Energy, z: torch.Tensor, steps: int, lr: float
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Adam on energy(z).sum() over z: (..., D), each row independently (Adam is per coordinate):
    the modes and floors of the likelihood checks, and the deepest wells of a prior. energy maps
    (..., D) -> (...). Returns the final z and the smallest energy seen per row along the way."""
    z = z.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([z], lr=lr)
    best = torch.full(z.shape[:-1], float("inf"), dtype=torch.float64, device=z.device)
    with torch.enable_grad():
        for _ in range(steps):
            opt.zero_grad()
            v = energy(z)
            best = torch.minimum(best, v.detach().double())
            v.sum().backward()
            opt.step()
    with torch.no_grad():
        best = torch.minimum(best, energy(z).double())
    return z.detach(), best
