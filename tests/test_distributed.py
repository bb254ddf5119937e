"""Data-parallel training (textebm/distributed.py): two gloo processes on CPU train the model
one process would, on the same global batches."""
import json
import os
import shutil
import subprocess
import sys
from functools import partial
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from corpora.batching import frame
from textebm.config import DecoderConfig, EncoderConfig, LangevinConfig, PriorConfig, RunConfig
from textebm.distributed import Ranks, sum_gradients
from textebm.model import LatentEBM
from textebm.train import make_optimizers, train_step

SENTS = [[4, 5, 6], [7, 8], [9, 10, 11, 4, 5], [6], [5, 5, 7, 8], [11, 10, 9, 8, 7, 6], [4]]


def _model_and_batch():
    torch.manual_seed(0)
    cfg = RunConfig(prior=PriorConfig(latent_dim=4, hidden=16),
                    decoder=DecoderConfig(vocab_size=12, embed=8, hidden=10, latent_dim=4, dropout=0.0),
                    langevin=LangevinConfig(init1="encoder"), encoder=EncoderConfig(embed=6, hidden=5))
    cfg.train.clip_decoder = cfg.train.clip_prior = 1e9   # compare raw gradients
    cfg.train.lr_decoder = cfg.train.lr_prior = cfg.encoder.lr = 0.0
    model = LatentEBM(cfg.prior, cfg.decoder, cfg.langevin, cfg.encoder).double()
    g = torch.Generator().manual_seed(1)
    z_pos = torch.randn(len(SENTS), 4, generator=g, dtype=torch.float64)
    z_neg = torch.randn(len(SENTS), 4, generator=g, dtype=torch.float64)
    return cfg, model, z_pos, z_neg


def _grads(rows, sync=None):
    """Parameter gradients of one Algorithm 1 step on SENTS[rows] with the chains' z fixed."""
    cfg, model, z_pos, z_neg = _model_and_batch()
    model.sample_prior = lambda n: (z_neg[rows], {})
    model.infer = lambda x, z0=None: (z_pos[rows], {})
    if hasattr(model, "posterior"):   # train_step asks the posterior for its codes
        model.posterior.train_codes = lambda model, x, z0=None: (z_pos[rows], None, {})
    train_step(model, frame([SENTS[i] for i in rows]), make_optimizers(model, cfg), cfg, sync=sync)
    return {k: p.grad.clone() for k, p in model.named_parameters()}


def _rank(rank, world, init_file, out):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.set_num_threads(1)
    ranks = Ranks(rank, world)
    rows = list(range(len(SENTS)))
    mine = ranks.share(rows)
    grads = _grads(mine, partial(sum_gradients, weight=len(mine) / len(rows), ranks=ranks))
    torch.save(grads, f"{out}.{rank}")
    dist.destroy_process_group()


def test_two_process_gradient_equals_one_process_gradient(tmp_path):
    mp.spawn(_rank, args=(2, str(tmp_path / "rdv"), str(tmp_path / "g")), nprocs=2)
    one = _grads(list(range(len(SENTS))))
    for r in range(2):
        two = torch.load(tmp_path / f"g.{r}", weights_only=True)
        assert two.keys() == one.keys()
        for k in one:
            rel = (two[k] - one[k]).norm() / one[k].norm().clamp_min(1e-30)
            assert rel < 1e-6, (r, k, float(rel))
    # The uneven split (4 + 3 rows) matters: unweighted averaging would be off.
    assert any((_grads([0, 2, 4, 6])[k] / 2 + _grads([1, 3, 5])[k] / 2 - one[k]).norm() > 1e-6
               for k in one)


TINY = ["--max-steps", "200", "--batch-size", "32", "--k0", "10", "--k1", "5", "--eval-every", "200",
        "--save-every", "100", "--quiet", "--threads", "1", "--device", "cpu"]


@pytest.mark.skipif(shutil.which("torchrun", path=str(Path(sys.executable).parent)) is None,
                    reason="torchrun not installed beside python")
def test_torchrun_two_processes_train_like_one(tmp_path):
    cfg = tmp_path / "small.toml"
    cfg.write_text("[decoder]\nembed = 16\nhidden = 32\n[encoder]\nembed = 16\nhidden = 16\n")
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = ["train", "demo", "--config", str(cfg), *TINY]
    subprocess.run([str(bin_dir / "textebm"), *args, "--out", str(tmp_path / "one")],
                   check=True, env=env, capture_output=True)
    for attempt in (1, 2):
        # One more try on a failure: a busy machine can fail torchrun's rendezvous (seen once in
        # CI, not reproduced in four reruns); a real fault fails both, and the assert shows why.
        shutil.rmtree(tmp_path / "two", ignore_errors=True)
        r = subprocess.run([str(bin_dir / "torchrun"), "--standalone", "--nproc_per_node=2",
                            str(bin_dir / "textebm"), *args, "--out", str(tmp_path / "two")],
                           env=env, capture_output=True, text=True)
        if r.returncode == 0:
            break
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-4000:])

    def val_nll(run):
        lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
        return [x for x in lines if x.get("kind") == "eval"][-1]["val_recon_nll_tok"]

    one, two = val_nll(tmp_path / "one"), val_nll(tmp_path / "two")
    # Rank 1's chains draw other noise than the single process, so the runs agree only up to the
    # seed-to-seed spread of this config: 3.326, 3.534, 3.493 nats/token for seeds 0, 1, 2.
    assert abs(one - two) < 0.1, (one, two)
    assert two < 3.7  # and both learned: the untrained decoder is at about log(V) = 6.6
    # Rank 0 alone wrote the run folder: one metrics line per step plus the validation.
    lines = (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 201


class _FakeCuda:
    """torch.cuda and torch.distributed as a node of `count` GPUs would show them to one rank."""

    def __init__(self, monkeypatch, count=2):
        self.calls = []
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
        monkeypatch.setattr(torch.cuda, "set_device", lambda d: self.calls.append(("set_device", d)))
        monkeypatch.setattr(dist, "is_initialized", lambda: False)
        monkeypatch.setattr(dist, "init_process_group",
                            lambda backend, **kw: self.calls.append(("init", backend, kw)))
        monkeypatch.setattr(dist, "get_rank", lambda: 1)
        monkeypatch.setattr(dist, "get_world_size", lambda: 2)


def test_each_rank_computes_on_the_gpu_its_local_rank_names(monkeypatch):
    # Every rank on cuda:0 was an NCCL failure ("duplicate GPU"): the rank's device is
    # cuda:LOCAL_RANK, made current before the process group starts, and returned.
    from textebm import distributed
    from textebm.device import pick_device
    fake = _FakeCuda(monkeypatch)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    dev = pick_device("cuda")
    assert dev == torch.device("cuda", 1) and fake.calls == [("set_device", 1)]
    fake.calls.clear()
    ranks = distributed.init(torch.device("cuda"))       # the CLI's device, before or after pick
    assert ranks.device == torch.device("cuda", 1) and (ranks.rank, ranks.world) == (1, 2)
    assert fake.calls[0] == ("set_device", 1)
    assert fake.calls[1] == ("init", "nccl", {"device_id": torch.device("cuda", 1)})
    assert distributed.init(dev).device == torch.device("cuda", 1)


def test_a_local_rank_without_its_gpu_or_a_cpu_run_is_told_apart(monkeypatch):
    from textebm import distributed
    from textebm.device import pick_device
    fake = _FakeCuda(monkeypatch, count=2)
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "3")
    with pytest.raises(ValueError, match="LOCAL_RANK=3.*2 CUDA device"):
        pick_device("cuda")
    # gloo on CPU: no CUDA call, the device unchanged.
    ranks = distributed.init(torch.device("cpu"))
    assert ranks.device == torch.device("cpu")
    assert fake.calls == [("init", "gloo", {})]
    # One process without torchrun: nothing is set, the device comes back as given.
    for k in ("WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(k)
    fake.calls.clear()
    assert distributed.init(torch.device("cuda")) == distributed.Ranks(0, 1, torch.device("cuda"))
    assert fake.calls == []
