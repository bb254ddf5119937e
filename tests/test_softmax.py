"""The fused output softmax (common/softmax.py) against torch's linear + cross_entropy."""
import torch
import torch.nn.functional as F

from corpora.batching import frame
from common.softmax import sentence_log_probs, target_log_probs


def _case(dtype=torch.float32, n=9, h=6, v=13, seed=0):
    g = torch.Generator().manual_seed(seed)
    states = torch.randn(n, h, generator=g, dtype=dtype)
    proj = torch.nn.Linear(h, v).to(dtype)
    target = torch.randint(v, (n,), generator=g)
    return states, proj, target


def test_values_and_gradients_match_cross_entropy():
    states, proj, target = _case()
    a = states.clone().requires_grad_(True)
    out = target_log_probs(a, proj, target)
    w = torch.linspace(0.5, 2.0, out.numel())  # unequal upstream gradients per row
    (out * w).sum().backward()
    grads = (a.grad, proj.weight.grad.clone(), proj.bias.grad.clone())
    proj.zero_grad()
    b = states.clone().requires_grad_(True)
    ref = -F.cross_entropy(proj(b), target, reduction="none")
    (ref * w).sum().backward()
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    for mine, theirs in zip(grads, (b.grad, proj.weight.grad, proj.bias.grad)):
        torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-6)


def test_gradcheck_in_double():
    states, proj, target = _case(torch.float64, n=5, h=4, v=7)
    states.requires_grad_(True)
    fn = lambda s, w, b: target_log_probs(s, type("P", (), {"weight": w, "bias": b})(), target,
                                          torch.float64)
    assert torch.autograd.gradcheck(fn, (states, proj.weight, proj.bias))


def test_log_probs_normalise():
    # Summing exp(log p(y|h)) over every y gives 1: the normaliser is right.
    states, proj, _ = _case(n=3, v=11)
    rows = states.repeat_interleave(11, 0)
    ys = torch.arange(11).repeat(3)
    total = target_log_probs(rows, proj, ys).exp().view(3, 11).sum(1)
    torch.testing.assert_close(total, torch.ones(3), rtol=1e-5, atol=1e-5)


def test_bf16_compute_stays_close_and_returns_fp32():
    states, proj, target = _case(n=64, h=32, v=500)
    a = states.clone().requires_grad_(True)
    low = target_log_probs(a, proj, target, torch.bfloat16)
    (g_low,) = torch.autograd.grad(low.sum(), a)
    b = states.clone().requires_grad_(True)
    ref = target_log_probs(b, proj, target)
    (g_ref,) = torch.autograd.grad(ref.sum(), b)
    assert low.dtype == torch.float32 and g_low.dtype == torch.float32
    assert (low - ref).abs().max() < 0.05 * ref.abs().mean()
    assert (g_low - g_ref).norm() / g_ref.norm() < 0.02
    assert not torch.equal(low, ref)  # bf16 really ran


def test_sentence_log_probs_skip_padding():
    # A sentence's log-prob does not change when its batch is padded further.
    torch.manual_seed(0)
    proj = torch.nn.Linear(5, 12)
    x = frame([[4, 5, 6], [7]])
    states = torch.randn(2, x.size(1) - 1, 5)
    wide = torch.cat([x, torch.zeros(2, 3, dtype=x.dtype)], 1)
    wide_states = torch.cat([states, torch.randn(2, 3, 5)], 1)
    torch.testing.assert_close(sentence_log_probs(states, x, proj),
                               sentence_log_probs(wide_states, wide, proj))


def test_the_fixed_shape_path_a_gpu_runs_gives_the_compact_paths_numbers(monkeypatch):
    # On CUDA the real targets are not picked out with a boolean mask (the host would wait for
    # the device at every call); every position is scored and padding is masked out of the sums.
    from common import softmax
    g = torch.Generator().manual_seed(3)
    x = frame([[4, 5, 6, 7, 8], [9], [10, 11], []])
    for dtype in (torch.float32, torch.float64):
        proj = torch.nn.Linear(6, 13).to(dtype)
        states = torch.randn(4, x.size(1) - 1, 6, generator=g, dtype=dtype)
        out = {}
        for path, devices in (("compact", {"cpu"}), ("fixed", set())):
            monkeypatch.setattr(softmax, "COMPACT_DEVICES", devices)
            assert softmax.compacts(x.device) == (path == "compact")
            s = states.clone().requires_grad_(True)
            proj.zero_grad()
            lp = sentence_log_probs(s, x, proj, torch.nn.Dropout(0.0))
            lp.square().sum().backward()
            out[path] = (lp.detach(), s.grad, proj.weight.grad.clone(), proj.bias.grad.clone())
        tol = dict(rtol=1e-6, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-12)
        for a, b in zip(out["compact"], out["fixed"]):
            torch.testing.assert_close(a, b, **tol)
        assert out["fixed"][1][1, 2:].abs().max() == 0   # padding (after 9 </s>): no gradient
