"""The output softmax of a word-level model, fused: log p(target | state) at N positions.

    log_probs(h, W, b, y)[n] = log softmax(h[n] W^T + b)[y[n]]          h: (N, H), W: (V, H)

Both the decoder p_beta(x|z) and the evaluation LSTM LM score sentences through it, and inside
a posterior Langevin chain it runs K1 times per iteration on every real token, so it is the
hottest code in training (PTB: 10,000 words x 512 units). Written as one autograd Function
rather than `linear` + `cross_entropy` because:
  - the forward keeps one (N, V) buffer, the logits turned into probabilities in place, and the
    backward builds dlogits from it in one pass (cross_entropy keeps logits and the log-softmax
    output, zero-fills a gradient buffer and re-reads each);
  - on CPU the forward matmul goes through oneDNN (`mkldnn._linear_pointwise`, where this torch
    has it), 1.5-1.8x faster than the default BLAS path for a PTB-sized product (700 x 512 x
    10,000, 2 threads) on our AMD test machine, whose BLAS splits that shape badly;
  - `dtype` sets the precision of the two big matmuls (bf16 for --precision bf16) while the
    normaliser log-sum-exp, the returned log-probs and the weight gradients stay fp32.
In a Langevin chain the weights are frozen (`model.frozen`), so the backward forms dh only.

Which positions are scored: on a host (`compacts(device)`, CPU) the states at real targets are
picked out with a boolean mask, so padding costs nothing; on a GPU that would make the host wait
for the device at every call (a boolean index has a data-dependent size, and the host must read
it before it can allocate: 4 syncs per call, 44 per training iteration), so there every position
is scored at a fixed shape and padding is masked out of the sums (`sentence_log_probs`). The two
agree to float rounding (tests/test_softmax.py); the CPU path is the one that always ran.
"""
from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F

from corpora.vocab import PAD_ID

# Device types on which data-dependent shapes (boolean-mask compaction, batches that shrink as
# sentences end) are used: there they cost no host-device synchronisation. Everywhere else the
# fixed-shape paths run. Shared by the decoder and the encoder (textebm); tests empty it to run
# the fixed-shape paths on CPU.
COMPACT_DEVICES = {"cpu"}


def compacts(device: torch.device | str) -> bool:
    """Whether code on `device` picks rows with data-dependent shapes (True on CPU) or keeps fixed
    shapes that never make the host wait for the device (CUDA)."""
    return torch.device(device).type in COMPACT_DEVICES


def _onednn_ok(t: torch.Tensor) -> bool:
    return (t.device.type == "cpu" and torch.backends.mkldnn.is_available()
            and hasattr(torch.ops.mkldnn, "_linear_pointwise")
            and t.dtype in (torch.float32, torch.bfloat16))


def _linear(h: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    """h W^T + b: (N, H) x (V, H) -> (N, V), in h's dtype."""
    if _onednn_ok(h):
        return torch.ops.mkldnn._linear_pointwise(h.contiguous(), w.contiguous(), b, "none", [], "")
    return F.linear(h, w, b)


def _lowered(t: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """t in a 16-bit compute dtype; fp32 asks for no cast (fp64 tests stay fp64)."""
    if t is None or dtype.itemsize >= 4 or t.dtype == dtype:
        return t
    return t.to(dtype)


class _TargetLogProb(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, weight, bias, target, dtype):
        cast = partial(_lowered, dtype=dtype)
        # The normaliser is taken in fp32 at least, whatever the matmuls ran in.
        acc = torch.promote_types(weight.dtype, torch.float32)
        logits = _linear(cast(h), cast(weight), cast(bias)).to(acc)
        # Softmax in place, in four passes over the (N, V) buffer (max, exp, sum, scale).
        picked = logits.gather(1, target.unsqueeze(1)).squeeze(1)
        top = logits.amax(1, keepdim=True)
        probs = logits.sub_(top).exp_()
        total = probs.sum(1, keepdim=True)
        probs.div_(total)
        out = picked - (top + total.log()).squeeze(1)
        ctx.save_for_backward(h, weight, probs, target)
        ctx.dtype, ctx.has_bias = dtype, bias is not None
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable  # first-order gradients only
    def backward(ctx, grad):
        h, weight, probs, target = ctx.saved_tensors
        # d out[n] / d logits[n] = onehot(y[n]) - softmax[n]. A new buffer, not the saved one,
        # so that a graph kept with retain_graph can be differentiated again.
        d = probs * -grad.unsqueeze(1)
        d.scatter_add_(1, target.unsqueeze(1), grad.unsqueeze(1))
        dh = dw = db = None
        low = partial(_lowered, dtype=ctx.dtype)
        if ctx.needs_input_grad[0]:
            dh = (low(d) @ low(weight)).to(h.dtype)
        if ctx.needs_input_grad[1]:
            dw = (low(d).t() @ low(h)).to(weight.dtype)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            db = d.sum(0)
        return dh, dw, db, None, None


def target_log_probs(h: torch.Tensor, proj: torch.nn.Linear, target: torch.Tensor,
                     dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """log softmax(proj(h))[target] per row. h: (N, H), target: (N,) long -> (N,) fp32.
    `dtype` is the matmuls' precision (fp32 or bf16); gradients reach h, proj.weight, proj.bias."""
    return _TargetLogProb.apply(h, proj.weight, proj.bias, target, dtype)


def sentence_log_probs(states: torch.Tensor, x: torch.Tensor, proj: torch.nn.Linear,
                       dropout: torch.nn.Module | None = None,
                       dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """log p(x) per sentence from an autoregressive model's states, summed over the scored
    targets (words and `</s>`; never `<s>` or padding).

    states: (B, T-1, H), the state before each target of the framed x: (B, T); `dropout` then
    `proj` map the states to logits, only at the N real targets where `compacts(x.device)`
    (padding costs nothing), else at every position, padding masked out of each sum. -> (B,).
    """
    tgt = x[:, 1:]
    mask = tgt != PAD_ID
    if not compacts(x.device):
        return _fixed_shape(states, tgt, mask, proj, dropout, dtype)
    h = states[mask]
    if dropout is not None:
        h = dropout(h)
    tok_lp = target_log_probs(h, proj, tgt[mask], dtype)
    rows = torch.arange(x.size(0), device=x.device).unsqueeze(1).expand_as(mask)[mask]
    return torch.zeros(x.size(0), dtype=tok_lp.dtype, device=x.device).index_add_(0, rows, tok_lp)


def _fixed_shape(states: torch.Tensor, tgt: torch.Tensor, mask: torch.Tensor, proj: torch.nn.Linear,
                 dropout: torch.nn.Module | None, dtype: torch.dtype) -> torch.Tensor:
    """`sentence_log_probs` with no data-dependent shape: every one of the B x (T-1) positions
    is scored (a padding position against target PAD_ID, a valid row of the softmax), then
    zeroed out of its sentence's sum, which is a plain reduction (deterministic on CUDA, where
    index_add_ adds in a varying order). Padding gets a zero gradient. -> (B,)"""
    B, L = mask.shape
    h = states.reshape(B * L, states.size(-1))
    if dropout is not None:
        h = dropout(h)
    tok_lp = target_log_probs(h, proj, tgt.reshape(B * L), dtype).view(B, L)
    return torch.where(mask, tok_lp, tok_lp.new_zeros(())).sum(1)
