"""Ready for a GPU without one (issue 41): what a CUDA run would stall on or crash at, caught on CPU.

A CPU has no device to wait for, so nothing here measures a stall: `HostSyncs` counts the operations
that *would* make the host wait for a CUDA device, by what they are, whatever device they run on:
  - a scalar read back (`.item()`, `bool(t)`, `int(t)`, `float(t)`: aten._local_scalar_dense);
  - an output whose shape depends on the data (nonzero, masked_select, indexing or index_put with a
    boolean mask, unique, repeat_interleave without its output size): the host must read the
    count before it can allocate;
  - a copy to the host (`.cpu()`, `.tolist()`, `.numpy()`, `.to("cpu")`), which on CPU dispatches
    nothing (the tensor is already there), so it is caught one level up, by a TorchFunctionMode
    (`.to(device)` with a torch.device is not counted: on a CPU, `.to(t.device)` cannot be told
    from `.to(torch.device("cpu"))`).
Every tensor counts as a device tensor except those passed as `host` (Adam's step counters: torch
keeps them on the CPU for CUDA parameters, and reads them without a sync).
"""
from __future__ import annotations

import collections
import os
import traceback

import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

_PACKAGES = ("textebm", "common", "corpora", "lm_eval", "pipeline")

_aten = torch.ops.aten
# Ops whose output shape the host learns only from the data.
_DATA_SHAPED = {_aten.nonzero.default, _aten.masked_select.default, _aten._unique2.default,
                _aten.unique_dim.default, _aten.unique_consecutive.default,
                _aten.repeat_interleave.Tensor, _aten.argwhere.default, _aten.nonzero_numpy.default}
_INDEXING = {_aten.index.Tensor, _aten.index_put.default, _aten.index_put_.default,
             _aten._index_put_impl_.default}
_TO_HOST = {"cpu", "tolist", "numpy"}


def _where() -> str:
    """The innermost frame in the project's packages (not torch, not the tests): file:line."""
    for f in reversed(traceback.extract_stack()[:-2]):
        parts = os.path.abspath(f.filename).split(os.sep)
        for i, p in enumerate(parts[:-1]):
            if p in _PACKAGES and ".venv" not in parts and "site-packages" not in parts:
                return f"{'/'.join(parts[i:])}:{f.lineno}"
    return "?"


class _Dispatch(TorchDispatchMode):
    def __init__(self, owner):
        super().__init__()
        self.owner = owner

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        o = self.owner
        o.ops += 1
        if func is _aten._local_scalar_dense.default:
            if not o.is_host(args[0]):
                o.hit("item", func)
        elif func in _DATA_SHAPED:
            if not (func is _aten.repeat_interleave.Tensor and kwargs.get("output_size") is not None):
                o.hit("data-shaped", func)
        elif func in _INDEXING:
            idx = args[1] if len(args) > 1 else kwargs.get("indices", ())
            if any(t is not None and t.dtype in (torch.bool, torch.uint8) for t in idx):
                o.hit("boolean mask", func)
        return func(*args, **kwargs)


class _Function(TorchFunctionMode):
    def __init__(self, owner):
        super().__init__()
        self.owner = owner

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if args and isinstance(args[0], torch.Tensor) and not self.owner.is_host(args[0]):
            if name in _TO_HOST or (name == "to" and _to_cpu(args[1:], kwargs)):
                self.owner.hit("to host", name)
        return func(*args, **kwargs)


def _to_cpu(args, kwargs) -> bool:
    """`.to("cpu")`: only the literal string can be told apart on a CPU, where `.to(t.device)`
    (a copy that stays on the device on CUDA) names the same torch.device."""
    dev = kwargs.get("device", args[0] if args else None)
    return isinstance(dev, str) and dev.split(":")[0] == "cpu"


class HostSyncs:
    """`with HostSyncs(host=[...]) as s: ...` then s.count, s.by_site (file:line -> count), s.ops
    (aten operations dispatched)."""

    def __init__(self, host=()):
        self._host = list(host)           # references keep the ids unique
        self._host_ids = {id(t) for t in self._host}
        self.events: list[tuple[str, str, str]] = []
        self.ops = 0

    def is_host(self, t) -> bool:
        return id(t) in self._host_ids

    def hit(self, kind: str, what) -> None:
        self.events.append((kind, str(what), _where()))

    @property
    def count(self) -> int:
        return len(self.events)

    @property
    def by_site(self) -> dict[str, int]:
        return dict(collections.Counter(f"{w} ({k}: {op})" for k, op, w in self.events))

    def __enter__(self):
        self._f, self._d = _Function(self), _Dispatch(self)
        self._f.__enter__()
        self._d.__enter__()
        return self

    def __exit__(self, *exc):
        self._d.__exit__(*exc)
        self._f.__exit__(*exc)
        return False


def adam_steps(opts: dict) -> list[torch.Tensor]:
    """The optimizers' step counters (host tensors for CUDA parameters, unless capturable)."""
    return [s["step"] for o in opts.values() for s in o.state.values()
            if isinstance(s.get("step"), torch.Tensor)]


# ---- fixtures ------------------------------------------------------------------------------

def tiny_cfg(recipe=None, k0=None):
    """The demo config at tiny sizes (the recipe's chains, K0 = 200 unless k0 is given)."""
    from textebm.config import build_config
    cfg = build_config("demo", recipe)
    cfg.decoder.vocab_size = 40
    cfg.decoder.embed, cfg.decoder.hidden = 16, 32
    cfg.prior.latent_dim = cfg.decoder.latent_dim = 8
    cfg.prior.hidden = 16
    cfg.encoder.embed, cfg.encoder.hidden = 8, 8
    if k0 is not None:
        cfg.langevin.k0 = k0
    return cfg


def batch(n=16, vocab=40, seed=1):
    from corpora.batching import frame
    g = torch.Generator().manual_seed(seed)
    lens = torch.randint(1, 12, (n,), generator=g).tolist()
    return frame([torch.randint(4, vocab, (k,), generator=g).tolist() for k in lens])


@pytest.fixture
def on_gpu_paths(monkeypatch):
    """The fixed-shape paths a CUDA device runs (common.softmax.compacts is False), on CPU."""
    from common import softmax
    monkeypatch.setattr(softmax, "COMPACT_DEVICES", set())


def _model(cfg):
    from textebm.model import build_model
    from textebm.train import make_optimizers
    torch.manual_seed(0)
    model = build_model(cfg)
    return model, make_optimizers(model, cfg)


# ---- a training iteration ------------------------------------------------------------------

def test_a_training_iteration_makes_the_host_wait_at_most_twice(on_gpu_paths):
    # Before: 53 per iteration (44 boolean-mask indexings in the output softmax, 11 calls x 4;
    # the encoder's lengths read back for packing, 2 calls x (1 + 3 inside the packing); the
    # logged values' one transfer). Now that transfer (train_step's .tolist()) is all.
    from textebm.train import train_step
    cfg = tiny_cfg()
    model, opts = _model(cfg)
    x = batch()
    train_step(model, x, opts, cfg)                 # the optimizers' state exists from here on
    with HostSyncs(host=adam_steps(opts)) as s:
        train_step(model, x, opts, cfg)
    assert s.count <= 2, s.by_site


def test_the_gpu_paths_train_as_the_cpu_paths_do(monkeypatch):
    # The fixed-shape softmax, encoder and decoder give the CPU paths' numbers to float
    # rounding: three iterations from the same seed end at the same weights.
    from common import softmax
    from textebm.train import train_step
    cfg = tiny_cfg(k0=20)
    x = batch()
    runs = []
    for devices in ({"cpu"}, set()):
        monkeypatch.setattr(softmax, "COMPACT_DEVICES", devices)
        model, opts = _model(cfg)
        torch.manual_seed(5)
        logs = [train_step(model, x, opts, cfg)[0] for _ in range(3)]
        runs.append((logs, model.state_dict()))
    (logs_a, a), (logs_b, b) = runs
    for la, lb in zip(logs_a, logs_b):
        assert la.keys() == lb.keys()
        for k in la:
            assert la[k] == pytest.approx(lb[k], rel=1e-4, abs=1e-5), k
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)


# ---- the prior chain -----------------------------------------------------------------------

def _prior_ops(model, steps):
    with HostSyncs() as s:
        model.sample_prior(16, steps=steps)
    return s.ops, s.count


def test_ops_per_prior_langevin_step():
    # The eager prior chain dispatches 40 operators per step (energy, its gradient, the update,
    # the noise): 8,000 launches for K0 = 200 on a GPU, about 80% of an iteration's. This pins
    # the count; GraphChain replays them as one launch.
    model, _ = _model(tiny_cfg())
    (ops10, syncs10), (ops20, syncs20) = _prior_ops(model, 10), _prior_ops(model, 20)
    per_step = (ops20 - ops10) / 10
    assert per_step <= 40, per_step
    assert syncs10 == syncs20 == 0


class _StandInChain:
    """GraphChain with its CUDA parts stood in for on CPU: the 'graph' re-runs what was captured
    with the dispatcher's modes off (the host sees one replay, as it would one graph launch)."""

    def __init__(self, energy):
        from textebm.langevin import GraphChain
        outer = self

        class Chain(GraphChain):
            def _usable(self, z, generator):
                return True

            def _warm(self, fn, dev):
                return fn()

            def _capture(self, run, dev, generator):
                outer.captures += 1

                def replay():
                    from torch.utils._python_dispatch import _disable_current_modes
                    outer.replays += 1
                    with _disable_current_modes():
                        run()
                return replay

        self.captures = self.replays = 0
        self.chain = Chain(energy)


def test_the_graph_chain_is_the_eager_chain_call_after_call():
    from textebm.langevin import langevin
    model, _ = _model(tiny_cfg())
    prior = model.prior
    with torch.no_grad():
        prior.net[-1].weight.mul_(5.0)        # far from N(0, I): the gradient matters
    energy = prior._u_energy
    stand = _StandInChain(energy)
    g_graph, g_eager = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    calls = [(6, 30, 0.4, 1.0), (6, 30, 0.4, 1.0), (6, 30, 0.4, 1.0), (9, 30, 0.4, 0.9),
             (6, 30, [0.5, 0.3], 0.0), (6, 30, 0.4, 1.0)]
    for n, steps, s, noise in calls:
        z0 = torch.randn(n, 8, generator=g_eager)
        torch.randn(n, 8, generator=g_graph)
        want, _ = langevin(energy, z0, steps, s, g_eager, noise=noise)
        got, info = stand.chain(z0, steps, s, g_graph, noise)
        assert torch.equal(got, want) and info == {"energies": [], "z_at": {}}
        assert got.grad_fn is None and not got.requires_grad
    assert torch.equal(g_graph.get_state(), g_eager.get_state())   # the stream moved as eager's
    # One capture per shape (6, 9 chains; the noiseless schedule), each checked by one replay.
    assert stand.captures == 3 and stand.replays == 3 + 3 and stand.chain.failed is None
    # The host issues a handful of operators per chain, not 40 per step.
    z0 = torch.randn(6, 8, generator=g_eager)
    with HostSyncs() as s:
        stand.chain(z0, 30, 0.4, g_graph, 1.0)
    assert s.ops <= 3 and s.count == 0, s.ops
    # Weights updated in place (the optimizer) are read at the next replay; weights replaced
    # (a new tensor) are noticed and the graph captured again.
    with torch.no_grad():
        prior.net[0].weight.mul_(-1.5)
    g_graph.set_state(g_eager.get_state())
    want, _ = langevin(energy, z0, 30, 0.4, g_eager)
    assert torch.equal(stand.chain(z0, 30, 0.4, g_graph, 1.0)[0], want)
    prior.net[0].weight = torch.nn.Parameter(prior.net[0].weight.detach().clone())
    before = stand.captures
    want, _ = langevin(energy, z0, 30, 0.4, g_eager)
    assert torch.equal(stand.chain(z0, 30, 0.4, g_graph, 1.0)[0], want)
    assert stand.captures == before + 1


def test_a_graph_that_lands_elsewhere_falls_back_to_the_eager_chain(recwarn):
    from textebm.langevin import GraphChain, langevin
    model, _ = _model(tiny_cfg())
    energy = model.prior._u_energy

    class Off(GraphChain):   # a capture whose replay does not redraw the warm-up's noise
        def _usable(self, z, generator):
            return True

        def _warm(self, fn, dev):
            return fn()

        def _capture(self, run, dev, generator):
            def replay():
                torch.randn(1, generator=generator)
                run()
            return replay

    chain = Off(energy)
    g_graph, g_eager = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
    z0 = torch.randn(5, 8, generator=torch.Generator().manual_seed(0))
    for _ in range(2):
        got, _ = chain(z0, 20, 0.4, g_graph, 1.0)
        want, _ = langevin(energy, z0, 20, 0.4, g_eager)
        assert torch.equal(got, want)
    assert chain.failed and "differs from the eager one" in chain.failed
    assert any("running eagerly" in str(w.message) for w in recwarn.list)
    assert torch.equal(g_graph.get_state(), g_eager.get_state())


def test_on_cpu_nothing_cuda_runs_and_the_factory_picks_by_device(monkeypatch):
    from textebm import langevin as L
    model, _ = _model(tiny_cfg())
    energy = model.prior._u_energy

    def no_cuda(*a, **k):
        raise AssertionError("a CUDA call on CPU")

    for name in ("Stream", "CUDAGraph", "graph", "current_stream", "get_rng_state",
                 "set_rng_state", "synchronize", "stream"):
        monkeypatch.setattr(torch.cuda, name, no_cuda)
    assert L.make_prior_chain(energy, "cpu", False) is None
    assert isinstance(L.make_prior_chain(energy, torch.device("cpu"), True), L.CompiledChain)
    chain = L.make_prior_chain(energy, "cuda", False)       # built, not run: touches nothing
    assert isinstance(chain, L.GraphChain)
    assert isinstance(L.make_prior_chain(energy, "cuda:1", True), L.GraphChain)
    monkeypatch.setenv("TEXTEBM_CUDA_GRAPHS", "0")
    assert L.make_prior_chain(energy, "cuda", False) is None
    assert isinstance(L.make_prior_chain(energy, "cuda", True), L.CompiledChain)
    # Called with CPU tensors it is the eager chain, bit for bit.
    z0 = torch.randn(4, 8, generator=torch.Generator().manual_seed(0))
    got, _ = chain(z0, 15, 0.4, torch.Generator().manual_seed(1), 0.9)
    want, _ = L.langevin(energy, z0, 15, 0.4, torch.Generator().manual_seed(1), noise=0.9)
    assert torch.equal(got, want)


# ---- the encoder, the decoder, AIS, MALA -----------------------------------------------------

def test_the_encoder_reads_lengths_on_the_device_and_gives_the_packed_states(monkeypatch):
    from common import softmax
    from textebm.config import EncoderConfig
    from textebm.encoder import AmortizedInit
    torch.manual_seed(0)
    enc = AmortizedInit(EncoderConfig(embed=8, hidden=12), 40, 8)
    x = batch(24)
    x[3, 1:] = 0
    x[3, 1] = 3            # an empty sentence: <s> </s>
    res = []
    for devices in ({"cpu"}, set()):
        monkeypatch.setattr(softmax, "COMPACT_DEVICES", devices)
        enc.zero_grad()
        with HostSyncs() as s:
            out = enc(x)
            out.square().sum().backward()
        res.append((out.detach(), [p.grad.clone() for p in enc.parameters()], s.count))
    (a, ga, syncs_packed), (b, gb, syncs) = res
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    for u, v in zip(ga, gb):
        torch.testing.assert_close(u, v, rtol=1e-4, atol=1e-5)
    assert syncs_packed >= 1 and syncs == 0


def _decoder():
    from textebm.config import DecoderConfig
    from textebm.decoder import LSTMDecoder
    torch.manual_seed(0)
    dec = LSTMDecoder(DecoderConfig(vocab_size=30, embed=8, hidden=16, latent_dim=4)).eval()
    with torch.no_grad():
        dec.proj.weight.mul_(8.0)       # peaked enough that greedy sentences end at several lengths
    return dec


def _length(row: list[int]) -> int:
    from corpora.vocab import EOS_ID
    return row.index(EOS_ID) + 1 if EOS_ID in row else len(row)


def test_decoding_on_the_gpu_path_keeps_the_batch_whole(monkeypatch):
    from common import softmax
    from corpora.vocab import PAD_ID
    dec = _decoder()
    z = 3 * torch.randn(64, 4, generator=torch.Generator().manual_seed(1))
    out = {}
    for name, devices in (("cpu", {"cpu"}), ("gpu", set())):
        monkeypatch.setattr(softmax, "COMPACT_DEVICES", devices)
        with HostSyncs() as s:
            greedy = dec.generate(z, 40, greedy=True)
            sampled = dec.generate(z, 40, generator=torch.Generator().manual_seed(2))
        out[name] = (greedy, sampled, s.count)
    assert torch.equal(out["cpu"][0], out["gpu"][0])           # greedy: the same sentences
    assert len({_length(r) for r in out["cpu"][0].tolist()}) >= 2   # of several lengths
    sampled = out["gpu"][1]
    assert torch.equal(out["cpu"][1][:, 0], sampled[:, 0])    # the same first draws
    rows = sampled.tolist()
    for row in rows:                                           # </s> then padding only
        assert all(t == PAD_ID for t in row[_length(row):])
    assert sampled.size(1) == max(map(_length, rows))         # cut to the longest sentence
    assert len({_length(r) for r in rows}) >= 3
    assert out["cpu"][2] > 2 * 40 // 8 and out["gpu"][2] <= 2 * (40 // 8 + 1)


def _ais_energy():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.LeakyReLU(0.2), torch.nn.Linear(16, 1))
    return lambda z: -3 * net(z).squeeze(-1)


def _anneal_on_the_host(u_init, u_target, z, betas, steps, generator, step_size=0.5,
                        target_accept=0.65):
    """textebm.ais.anneal as it was (a copy, the host reading back twice per temperature)."""
    from textebm.langevin import accept, energy_and_grad, propose
    G, n, D = z.shape
    T = len(betas) - 1

    def parts(v):
        ui, gi = energy_and_grad(lambda x: u_init(x.view(G, n, D)).reshape(-1), v.reshape(-1, D))
        ut, gt = energy_and_grad(lambda x: u_target(x.view(G, n, D)).reshape(-1), v.reshape(-1, D))
        return ui.view(G, n), gi.view(G, n, D), ut.view(G, n), gt.view(G, n, D)

    ui, gi, ut, gt = parts(z)
    log_w = torch.zeros(G, n, dtype=torch.float64, device=z.device)
    used = torch.empty(G, T, dtype=torch.float64)
    s = torch.full((G, 1, 1), step_size, dtype=z.dtype, device=z.device)
    accepted = 0.0
    for t in range(1, T + 1):
        b, b_prev = float(betas[t]), float(betas[t - 1])
        log_w += (b - b_prev) * (ui - ut).double()
        if steps is not None:
            s = steps[:, t - 1].to(z.dtype).view(G, 1, 1).to(z.device)
        used[:, t - 1] = s.view(G).double().cpu()
        u, g = (1 - b) * ui + b * ut, (1 - b) * gi + b * gt
        prop = propose(z, g, s, generator)
        pi, pgi, pt, pgt = parts(prop)
        ok = accept(z.reshape(-1, D), prop.reshape(-1, D), u.reshape(-1),
                    ((1 - b) * pi + b * pt).reshape(-1), g.reshape(-1, D),
                    ((1 - b) * pgi + b * pgt).reshape(-1, D), s.expand(G, n, 1).reshape(-1, 1),
                    generator).view(G, n)
        keep = ok.unsqueeze(-1)
        z = torch.where(keep, prop, z)
        ui, ut = torch.where(ok, pi, ui), torch.where(ok, pt, ut)
        gi, gt = torch.where(keep, pgi, gi), torch.where(keep, pgt, gt)
        rate = ok.to(z.dtype).mean(1)
        accepted += rate.mean().item()
        if steps is None:
            s = s * torch.exp(0.5 * (rate - target_accept)).view(G, 1, 1)
    return log_w, used, accepted / max(T, 1)


def test_ais_keeps_its_bookkeeping_on_the_device_with_the_same_numbers():
    from textebm.ais import anneal, gaussian_u, sigmoid_schedule
    energy = _ais_energy()

    def u_target(z):
        return energy(z.reshape(-1, 4)).view(z.shape[:-1]) + gaussian_u(z)

    syncs = {}
    for T in (10, 60):
        betas = sigmoid_schedule(T)
        z = torch.randn(3, 20, 4, generator=torch.Generator().manual_seed(1))
        runs = []
        for fn in (anneal, _anneal_on_the_host):
            g = torch.Generator().manual_seed(2)
            with HostSyncs(host=[betas]) as s:    # the schedule is made on the host
                pilot = fn(gaussian_u, u_target, z, betas, None, g)
                final = fn(gaussian_u, u_target, z, betas, pilot[1], g)
            runs.append((pilot, final, s.count))
        (p_dev, f_dev, syncs[T]), (p_host, f_host, host_syncs) = runs
        for a, b in ((p_dev, p_host), (f_dev, f_host)):   # the same arithmetic: bit for bit
            assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and a[2] == b[2]
            assert a[1].device.type == "cpu" and a[1].dtype == torch.float64
        assert host_syncs >= 4 * T
    assert syncs[10] == syncs[60] <= 4     # two per anneal, whatever the temperatures


def _mala_on_the_host(energy, z, steps, step_size, generator, target_accept=0.6):
    """textebm.langevin.mala_chain as it was: the step size adapted on the host."""
    from textebm.langevin import energy_and_grad, mala_step
    u, g = energy_and_grad(energy, z)
    s, rates = float(step_size), []
    for k in range(steps):
        z, u, g, ok = mala_step(energy, z, u, g, s, generator)
        rate = ok.float().mean().item()
        if k < steps // 2:
            s *= math.exp(0.5 * (rate - target_accept))
        else:
            rates.append(rate)
    return z, sum(rates) / len(rates), s


def test_mala_reads_back_once_per_chain_with_the_same_chain():
    from textebm.langevin import mala_chain
    e = _ais_energy()

    def energy(z):
        return e(z) + 0.5 * z.pow(2).sum(-1)

    counts = []
    for steps in (10, 60):
        z0 = torch.randn(64, 4, generator=torch.Generator().manual_seed(3))
        with HostSyncs() as s:
            z, info = mala_chain(energy, z0, steps, 0.5, torch.Generator().manual_seed(4))
        counts.append(s.count)
        z_h, acc_h, s_h = _mala_on_the_host(energy, z0, steps, 0.5, torch.Generator().manual_seed(4))
        # torch.exp and math.exp may differ in the last bit of a float64: to rounding.
        torch.testing.assert_close(z, z_h, rtol=1e-5, atol=1e-6)
        assert info["accept"] == pytest.approx(acc_h, abs=1e-9)
        assert info["step_size"] == pytest.approx(s_h, rel=1e-12)
    assert counts[0] == counts[1] == 1


import math  # noqa: E402  (used by the host-side MALA reference above)
