"""Algorithm 1 end to end on the demo corpus: learning, resume equivalence, divergence guard."""
import json

import pytest
import torch

import textebm.train as train_mod
from textebm.checkpoint import load_checkpoint, load_run_files
from textebm.config import for_corpus
from textebm.diagnostics import recon_nll as reconstruction_nll
from textebm.model import build_model
from textebm.train import DivergenceError, TrainSetup, train


def small_cfg(steps, **train_kw):
    cfg = for_corpus("demo")
    cfg.decoder.embed, cfg.decoder.hidden = 16, 32
    cfg.langevin.k0, cfg.langevin.k1 = 10, 5
    cfg.train.max_steps, cfg.train.batch_size = steps, 16
    cfg.train.eval_every, cfg.train.eval_sentences = 0, 50
    # Algorithm 1 as written (the EBM learns from step 1, once per step; no weight average): the
    # tests below switch the default's additions on where they test them.
    cfg.train.prior_start, cfg.train.prior_updates, cfg.train.ema = 0, 1, 0.0
    for k, v in train_kw.items():
        setattr(cfg.train, k, v)
    return cfg


def run(cfg, corpus, out, resume=False):
    return train(cfg, corpus, TrainSetup(out, torch.device("cpu"), progress=False, resume=resume))


def test_resume_reproduces_an_uninterrupted_run(demo, tmp_path):
    run(small_cfg(6, save_every=3), demo, tmp_path / "a")
    run(small_cfg(3, save_every=3), demo, tmp_path / "b")
    run(small_cfg(6, save_every=3), demo, tmp_path / "b", resume=True)
    a, b = load_checkpoint(tmp_path / "a"), load_checkpoint(tmp_path / "b")
    assert a["step"] == b["step"] == 6
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert a["optimizers"]["prior"]["state"][0]["exp_avg"].equal(b["optimizers"]["prior"]["state"][0]["exp_avg"])
    lines = (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(l)["step"] for l in lines] == [1, 2, 3, 4, 5, 6]


def test_checkpoint_round_trip(demo, tmp_path, monkeypatch):
    import copy
    trained = {}
    real_save = train_mod.save_checkpoint

    def keep_the_trained_model(out, model, *args, **kwargs):   # a spy: the save is unchanged
        trained["model"] = copy.deepcopy(model)
        return real_save(out, model, *args, **kwargs)
    monkeypatch.setattr(train_mod, "save_checkpoint", keep_the_trained_model)
    run(small_cfg(2), demo, tmp_path)
    cfg, vocab = load_run_files(tmp_path)
    assert cfg.decoder.vocab_size == len(vocab) and cfg.decoder.embed == 16
    model = build_model(cfg)
    model.load_state_dict(load_checkpoint(tmp_path)["model"])
    ids = [vocab.encode(s) for s in demo.split("valid")[:20]]
    # The model read back from the folder is the one training ended with in memory: the same
    # weights, so the same reconstruction NLL from the same fixed-seed chains; an untrained model
    # of the same settings reads differently.
    mem = trained["model"]
    for k, v in mem.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k
    want = reconstruction_nll(mem, ids, 5)
    assert reconstruction_nll(model, ids, 5) == want
    torch.manual_seed(123)
    assert reconstruction_nll(build_model(cfg), ids, 5) != pytest.approx(want, abs=1e-3)
    # A checkpoint is plain tensors and containers: weights_only loading accepts it.
    torch.load(tmp_path / "checkpoint.pt", weights_only=True)


def test_divergence_guard_names_the_step_and_keeps_the_last_good_checkpoint(demo, tmp_path, monkeypatch):
    real = train_mod.train_step
    calls = {"n": 0}

    def flaky(*a, **k):
        calls["n"] += 1
        m, z_pos = real(*a, **k)
        if calls["n"] == 3:
            m["e_pos_minus_neg"] = float("nan")
        return m, z_pos

    monkeypatch.setattr(train_mod, "train_step", flaky)
    with pytest.raises(DivergenceError, match="step 3"):
        run(small_cfg(10, save_every=1), demo, tmp_path)
    assert load_checkpoint(tmp_path)["step"] == 2


def test_a_huge_prior_step_size_trips_the_guard(demo, tmp_path):
    cfg = small_cfg(5)
    cfg.langevin.s0 = 1e6
    with pytest.raises(DivergenceError, match=r"step 1: .*langevin.s0"):
        run(cfg, demo, tmp_path)


def test_short_demo_run_lowers_validation_nll(demo, tmp_path):
    cfg = small_cfg(120, eval_every=120)
    cfg.train.batch_size = 32
    cfg.train.lr_decoder = 3e-3
    run(cfg, demo, tmp_path)
    evals = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()
             if '"eval"' in l]
    cfg2, vocab = load_run_files(tmp_path)
    untrained = build_model(cfg2)
    ids = [vocab.encode(s) for s in demo.split("valid")[:50]]
    before = reconstruction_nll(untrained, ids, cfg.train.seed + 1)
    after = evals[-1]["val_recon_nll_tok"]
    assert before > 5.0            # about log(293): uniform over the demo vocabulary
    assert after < before - 1.5, (before, after)
    # The latent-use diagnostic is logged beside it: z from N(0, I) cannot beat z from p(z|x)
    # by more than chain noise.
    assert evals[-1]["val_random_z_nll_tok"] > after - 0.02


def test_ctrl_c_saves_a_whole_step_and_resume_matches(demo, tmp_path, monkeypatch):
    import signal

    real = train_mod.train_step
    calls = {"n": 0}

    def interrupted(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3:  # Ctrl-C arrives in the middle of iteration 3
            signal.raise_signal(signal.SIGINT)
        return real(*a, **k)

    monkeypatch.setattr(train_mod, "train_step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run(small_cfg(6, save_every=100), demo, tmp_path / "b")
    assert load_checkpoint(tmp_path / "b")["step"] == 3     # iteration 3 completed, then saved
    monkeypatch.setattr(train_mod, "train_step", real)
    run(small_cfg(6, save_every=100), demo, tmp_path / "b", resume=True)
    run(small_cfg(6, save_every=100), demo, tmp_path / "a")
    a, b = load_checkpoint(tmp_path / "a"), load_checkpoint(tmp_path / "b")
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k


def test_resuming_a_finished_run_is_a_no_op(demo, tmp_path):
    run(small_cfg(2), demo, tmp_path)
    before = load_checkpoint(tmp_path)["model"]
    summary = run(small_cfg(2), demo, tmp_path, resume=True)
    assert summary["step"] == 2 and summary["final_train_nll_tok"] is None
    after = load_checkpoint(tmp_path)["model"]
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("init1", ["persistent", "encoder"])
def test_posterior_start_options_resume_bit_identically(demo, tmp_path, init1):
    """The persistent bank and the amortized initializer are training state: a run resumed from
    step 3 ends with the same weights, optimisers and bank as an uninterrupted one."""
    def cfg(steps):
        c = small_cfg(steps, save_every=3)
        c.langevin.init1 = init1
        return c
    run(cfg(6), demo, tmp_path / "a")
    run(cfg(3), demo, tmp_path / "b")
    run(cfg(6), demo, tmp_path / "b", resume=True)
    a, b = load_checkpoint(tmp_path / "a"), load_checkpoint(tmp_path / "b")
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    if init1 == "persistent":
        assert torch.equal(a["bank"], b["bank"])
        # The bank holds one z per training sentence; the 6 batches of 16 moved 96 of them.
        fresh = torch.Generator().manual_seed(small_cfg(1).train.seed + 3)
        start = torch.randn(a["bank"].shape, generator=fresh)
        moved = (a["bank"] != start).any(1).sum().item()
        assert a["bank"].shape == (len(demo.train), 32) and moved == 6 * 16
    else:
        assert any(k.startswith("posterior.encoder.") for k in a["model"])
        assert torch.equal(a["optimizers"]["encoder"]["state"][0]["exp_avg"],
                           b["optimizers"]["encoder"]["state"][0]["exp_avg"])


def test_amortized_initializer_is_regressed_onto_the_chain_end_point(demo):
    """One iteration moves g(x) towards that iteration's z+ (the chain's end, started at g(x))."""
    from corpora.batching import frame
    from corpora.vocab import Vocab
    c = small_cfg(1)
    c.langevin.init1, c.encoder.lr = "encoder", 1e-2
    vocab = Vocab.build(demo.train)
    c.decoder.vocab_size = len(vocab)
    torch.manual_seed(0)
    model = build_model(c)
    opts = train_mod.make_optimizers(model, c)
    x = frame([vocab.encode(s) for s in demo.train[:16]])
    with torch.no_grad():
        before = model.posterior.code(x)
    m, z_pos = train_mod.train_step(model, x, opts, c)
    with torch.no_grad():
        after = model.posterior.code(x)
    assert m["init_err"] == pytest.approx((before - z_pos).pow(2).sum(-1).mean().item(), rel=1e-5)
    assert (after - z_pos).pow(2).sum(-1).mean() < 0.9 * (before - z_pos).pow(2).sum(-1).mean()


def test_time_budget_counts_training_time_over_resumes(demo, tmp_path, monkeypatch):
    """A fake clock that moves 10 s per iteration: a 0.5-minute budget stops after 3 steps, a
    resume with 1 minute adds 3 more (the first 30 s are remembered), and a resume that gives no
    budget keeps the run's own and trains nothing."""
    clock = {"t": 1000.0}
    real = train_mod.train_step

    def ten_seconds(*a, **k):
        clock["t"] += 10.0
        return real(*a, **k)

    monkeypatch.setattr(train_mod, "train_step", ten_seconds)
    monkeypatch.setattr(train_mod.time, "time", lambda: clock["t"])
    s = run(small_cfg(100, time_budget=0.5), demo, tmp_path)
    assert s["step"] == 3 and s["train_seconds"] == pytest.approx(30.0)
    s = run(small_cfg(100, time_budget=1.0), demo, tmp_path, resume=True)
    assert s["step"] == 6 and s["train_seconds"] == pytest.approx(60.0)
    lines = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [m["seconds"] for m in lines] == pytest.approx([10, 20, 30, 40, 50, 60])
    s = run(small_cfg(100), demo, tmp_path, resume=True)
    assert s["step"] == 6 and load_run_files(tmp_path)[0].train.time_budget == 1.0


def test_prior_start_holds_the_ebm_then_lets_it_learn(demo, tmp_path):
    """train.prior_start = 3: the EBM keeps its initial weights (and no prior chain runs, so no
    energies are logged) for 3 iterations, then learns; a resume across that boundary matches an
    uninterrupted run."""
    run(small_cfg(3, prior_start=3), demo, tmp_path / "held")
    run(small_cfg(5, prior_start=3, save_every=2), demo, tmp_path / "a")
    run(small_cfg(2, prior_start=3, save_every=2), demo, tmp_path / "b")
    run(small_cfg(5, prior_start=3, save_every=2), demo, tmp_path / "b", resume=True)
    torch.manual_seed(small_cfg(1).train.seed)
    init = build_model(load_run_files(tmp_path / "held")[0]).state_dict()
    held = load_checkpoint(tmp_path / "held")["model"]
    a, b = load_checkpoint(tmp_path / "a")["model"], load_checkpoint(tmp_path / "b")["model"]
    prior_keys = [k for k in held if k.startswith("prior.")]
    assert prior_keys and all(torch.equal(held[k], init[k]) for k in prior_keys)
    assert not torch.equal(held["decoder.embed.weight"], init["decoder.embed.weight"])
    assert all(not torch.equal(a[k], held[k]) for k in prior_keys if k.endswith("weight"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    steps = [json.loads(l) for l in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert [("e_pos" in m, "z_neg_norm" in m) for m in steps] == [(False, False)] * 3 + [(True, True)] * 2
    # A Gaussian prior still draws (and logs) its z- every step after the start, as before the option.
    g = small_cfg(3)
    g.prior.kind = "gaussian"
    run(g, demo, tmp_path / "gauss")
    lines = [json.loads(l) for l in (tmp_path / "gauss" / "metrics.jsonl").read_text().splitlines()]
    assert all("z_neg_norm" in m and "e_pos" not in m for m in lines)


def test_lr_final_decays_every_learning_rate_linearly(demo, tmp_path):
    """lr_final = 0.1 over 10 steps: the optimisers saved after step 10 last stepped at step 9,
    i.e. at 1 - 0.9 * 9/10 = 0.19 of each base rate; lr_final = 1 leaves the rates alone."""
    cfg = small_cfg(10, lr_final=0.1)
    cfg.langevin.init1 = "encoder"
    run(cfg, demo, tmp_path / "decay")
    run(small_cfg(10), demo, tmp_path / "flat")
    opt = load_checkpoint(tmp_path / "decay")["optimizers"]
    base = {"decoder": cfg.train.lr_decoder, "prior": cfg.train.lr_prior, "encoder": cfg.encoder.lr}
    for k, lr in base.items():
        assert opt[k]["param_groups"][0]["lr"] == pytest.approx(0.19 * lr), k
    flat = load_checkpoint(tmp_path / "flat")["optimizers"]
    assert flat["decoder"]["param_groups"][0]["lr"] == cfg.train.lr_decoder


def test_ema_averages_the_weights_without_changing_training(demo, tmp_path):
    """train.ema = 0.6 over 3 steps: the run's own weights are those of the same run without an
    average, and the average is the recurrence of textebm.ema replayed on the 1-, 2- and 3-step
    runs' weights (decays min(0.6, (1+k)/(10+k)) = 0.18, 0.25, 0.31); load() reads the average, or
    the last weights with average=False; a resume continues the average exactly."""
    from textebm.api import load
    from textebm.ema import ema_decay

    for n in (1, 2, 3):
        run(small_cfg(n), demo, tmp_path / f"plain{n}")
    run(small_cfg(3, ema=0.6), demo, tmp_path / "ema")
    plain = [load_checkpoint(tmp_path / f"plain{n}")["model"] for n in (1, 2, 3)]
    got = load_checkpoint(tmp_path / "ema")
    assert all(torch.equal(got["model"][k], plain[2][k]) for k in plain[2])
    torch.manual_seed(small_cfg(1).train.seed)
    expect = build_model(load_run_files(tmp_path / "ema")[0]).state_dict()
    assert [round(ema_decay(0.6, k), 2) for k in (1, 2, 3)] == [0.18, 0.25, 0.31]
    for k, w in enumerate(plain, start=1):
        d = ema_decay(0.6, k)
        expect = {n: d * v + (1 - d) * w[n] if v.is_floating_point() else w[n] for n, v in expect.items()}
    w = "decoder.out.weight" if "decoder.out.weight" in expect else next(iter(expect))
    for n in expect:
        assert torch.allclose(got["ema"][n], expect[n], atol=1e-6), n
    assert not torch.allclose(got["ema"][w], got["model"][w])
    avg, last = load(tmp_path / "ema"), load(tmp_path / "ema", average=False)
    assert torch.equal(avg.model.state_dict()[w], got["ema"][w])
    assert torch.equal(last.model.state_dict()[w], got["model"][w])
    assert (avg.weights, last.weights, load(tmp_path / "plain3").weights) == ("average", "last", "last")
    # Resume: 2 steps, then on to 3, equals the uninterrupted run, average included.
    run(small_cfg(2, ema=0.6, save_every=2), demo, tmp_path / "resumed")
    run(small_cfg(3, ema=0.6, save_every=2), demo, tmp_path / "resumed", resume=True)
    again = load_checkpoint(tmp_path / "resumed")
    assert all(torch.equal(again["ema"][n], got["ema"][n]) for n in got["ema"])


def test_prior_updates_repeat_the_ebm_step_against_fresh_chains(demo, tmp_path):
    """train.prior_updates = 3: the EBM's optimiser steps 3 times per iteration (the decoder's
    once), and the EBM ends elsewhere than with one update; the decoder's first step, taken
    before any EBM update, is the same in both runs."""
    run(small_cfg(2, prior_updates=3), demo, tmp_path / "three")
    run(small_cfg(2), demo, tmp_path / "one")
    run(small_cfg(1, prior_updates=3), demo, tmp_path / "three1")
    run(small_cfg(1), demo, tmp_path / "one1")
    three, one = load_checkpoint(tmp_path / "three"), load_checkpoint(tmp_path / "one")
    steps = lambda p, k: int(p["optimizers"][k]["state"][0]["step"])  # noqa: E731
    assert (steps(three, "prior"), steps(three, "decoder")) == (6, 2)
    assert (steps(one, "prior"), steps(one, "decoder")) == (2, 2)
    assert not torch.equal(three["model"]["prior.net.0.weight"], one["model"]["prior.net.0.weight"])
    a, b = load_checkpoint(tmp_path / "three1")["model"], load_checkpoint(tmp_path / "one1")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a if k.startswith("decoder."))
    assert not all(torch.equal(a[k], b[k]) for k in a if k.startswith("prior."))


def test_validation_leaves_training_unchanged(demo, tmp_path):
    # Validation (latent use and the prior's coherence: chains, descents, AIS) draws from its own
    # generators: a run validated every 3 steps ends with the weights of one never validated.
    run(small_cfg(7, eval_every=3), demo, tmp_path / "v")
    run(small_cfg(7), demo, tmp_path / "n")
    a, b = load_checkpoint(tmp_path / "v"), load_checkpoint(tmp_path / "n")
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    evals = [json.loads(ln) for ln in (tmp_path / "v" / "metrics.jsonl").read_text().splitlines()
             if '"eval"' in ln]
    assert [e["step"] for e in evals] == [3, 6, 7] and "log_z_ais" in evals[0]  # and at the end


def test_pretraining_is_an_autoencoder_step_on_the_joint_then_algorithm_1(demo, tmp_path):
    """train.pretrain_steps = 3: for 3 iterations the EBM keeps its init and no chain runs; the
    step's loss is -log p(x|g(x)) + ||g(x)||^2/2, so one step by hand from the same weights on
    the same batch gives the same weights; a resume across the boundary matches one run."""
    cfg = small_cfg(5, pretrain_steps=3, save_every=2)
    cfg.langevin.init1 = "encoder"
    run(cfg, demo, tmp_path / "a")
    cfg_b = small_cfg(2, pretrain_steps=3, save_every=2)
    cfg_b.langevin.init1 = "encoder"
    run(cfg_b, demo, tmp_path / "b")
    run(cfg, demo, tmp_path / "b", resume=True)
    a, b = load_checkpoint(tmp_path / "a")["model"], load_checkpoint(tmp_path / "b")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    steps = [json.loads(l) for l in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert [m.get("pretrain") for m in steps] == [1.0] * 3 + [None] * 2
    assert [("e_pos" in m, "z_neg_norm" in m) for m in steps] == [(False, False)] * 3 + [(True, True)] * 2

    # The objective, by hand: the same weights, batch and dropout stream, one Adam step each;
    # with train.decoder_noise = 0.7 the decoder reads g(x) + 0.7 N(0, I), drawn after g(x).
    saved = load_run_files(tmp_path / "a")[0]
    x = torch.tensor([[1, 5, 6, 7, 2, 0], [1, 8, 9, 2, 0, 0]])
    for sigma in (0.0, 0.7):
        cfg1 = small_cfg(1, pretrain_steps=1, decoder_noise=sigma)
        cfg1.langevin.init1 = "encoder"
        torch.manual_seed(0)
        model = build_model(saved)
        opts = train_mod.make_optimizers(model, cfg1)
        twin = build_model(saved)
        twin.load_state_dict(model.state_dict())
        torch.manual_seed(3)
        logs, z = train_mod.pretrain_step(model, x, opts, cfg1)
        twin.train()
        t_opts = train_mod.make_optimizers(twin, cfg1)
        torch.manual_seed(3)
        g = twin.posterior.code(x)
        read = g + sigma * torch.randn_like(g) if sigma else g
        loss = (-twin.decoder.log_prob(x, read) + 0.5 * g.pow(2).sum(-1)).mean()
        for o in t_opts.values():
            o.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(twin.decoder.parameters()), cfg1.train.clip_decoder)
        t_opts["decoder"].step()
        t_opts["encoder"].step()
        sd, td = model.state_dict(), twin.state_dict()
        assert all(torch.allclose(sd[k], td[k]) for k in sd)
        assert torch.allclose(z, g.detach()) and logs["pretrain"] == 1.0
        # The prior took no step.
        assert all(torch.equal(sd[k], td[k]) for k in sd if k.startswith("prior."))
        if sigma:  # the noisy read is another step than the clean one
            assert not all(torch.allclose(sd[k], clean[k]) for k in sd if k.startswith("decoder."))
        clean = sd
    with pytest.raises(ValueError, match="decoder_noise"):
        small_cfg(1, decoder_noise=-0.1).validate()
    with pytest.raises(ValueError, match="encoder"):
        bad = small_cfg(1, pretrain_steps=2)
        bad.langevin.init1 = "noise"
        bad.validate()
