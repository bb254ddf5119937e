"""--precision: the request is resolved and recorded, bf16 changes the compute but not the
fp32 state, and the posterior-chain gradient stays close to fp32's."""
import json

import pytest
import torch

from corpora.batching import frame
from textebm.config import DecoderConfig, LangevinConfig, PriorConfig
from textebm.model import LatentEBM
from common.precision import resolve

SENTS = [[4, 5, 6], [7, 8], [9, 10, 11, 4, 5], [6]]


def tiny_model():
    torch.manual_seed(0)
    return LatentEBM(PriorConfig(latent_dim=4, hidden=16),
                     DecoderConfig(vocab_size=12, embed=8, hidden=10, latent_dim=4, dropout=0.0),
                     LangevinConfig(k0=10, s0=0.4, k1=5, s1=0.1))


def test_resolve_explicit_and_bad_values():
    assert resolve("fp32", "cpu") == ("fp32", "asked for")
    assert resolve("bf16", "cpu")[0] == "bf16"
    picked, why = resolve("auto", "cpu")
    assert picked in ("fp32", "bf16") and why
    with pytest.raises(ValueError, match="precision"):
        resolve("fp16", "cpu")


def test_bf16_decoder_keeps_fp32_weights_and_z_gradient():
    m = tiny_model().eval()
    x = frame(SENTS)
    z = torch.randn(len(SENTS), 4)

    def grad():
        zz = z.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(m.posterior_energy(zz, x).sum(), zz)
        return m.decoder.log_prob(x, z), g
    lp32, g32 = grad()
    m.decoder.compute_dtype = torch.bfloat16
    lp16, g16 = grad()
    assert lp16.dtype == torch.float32 and g16.dtype == torch.float32
    assert all(p.dtype == torch.float32 for p in m.parameters())
    assert not torch.equal(lp16, lp32)
    assert (lp16 - lp32).abs().max() < 0.02 * lp32.abs().mean()
    assert (g16 - g32).norm() / g32.norm() < 0.05


def test_chain_leaves_parameters_trainable():
    # The posterior chain freezes the weights while it runs (dU/dz only), and gives them back.
    m = tiny_model()
    x = frame(SENTS)
    m.infer(x)
    assert all(p.requires_grad for p in m.parameters())
    assert all(p.grad is None for p in m.parameters())


def test_train_records_precision(hermetic, tmp_path):
    from typer.testing import CliRunner
    from cli import app
    out = tmp_path / "run"
    r = CliRunner().invoke(app, ["train", "demo", "--out", str(out), "--max-steps", "3",
                                 "--batch-size", "8", "--eval-every", "0", "--precision", "bf16",
                                 "--quiet"])
    assert r.exit_code == 0, r.output
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["train"]["precision"] == "bf16" and cfg["train"]["precision_used"] == "bf16"
    assert json.loads((out / "summary.json").read_text())["precision"] == "bf16"
    from textebm.api import load
    # A run is read in the precision it trained in unless told otherwise.
    assert load(out).precision == "bf16"
    assert load(out, precision="fp32").precision == "fp32"
