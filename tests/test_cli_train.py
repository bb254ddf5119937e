"""`textebm train` and `textebm config` end to end through the CLI: run folder, latest marker,
metrics, curves; every setting by `--set`, the old flags through their table, the printed TOML."""
import json

import pytest
from typer.testing import CliRunner

from cli import app

runner = CliRunner()
TINY = ["--max-steps", "4", "--set", "train.batch_size=8", "--set", "langevin.k0=3", "--set",
        "langevin.k1=2", "--set", "train.eval_every=2", "--set", "train.save_every=2", "--quiet",
        "--threads", "1"]


def test_train_demo_writes_a_complete_run(tmp_path, monkeypatch):
    monkeypatch.setenv("TEXTEBM_RUNS", str(tmp_path / "runs"))
    cfg = tmp_path / "small.toml"
    cfg.write_text("[decoder]\nembed = 8\nhidden = 16\n[train]\nlr_decoder = 0.002\n")
    r = runner.invoke(app, ["train", "demo", "--config", str(cfg), "--out", str(tmp_path / "run"), *TINY])
    assert r.exit_code == 0, r.output
    run = tmp_path / "run"
    for f in ("config.json", "vocab.txt", "checkpoint.pt", "metrics.jsonl",
              "curves.png", "summary.json"):
        assert (run / f).is_file(), f
    saved = json.loads((run / "config.json").read_text())
    # TOML sets the sizes, the command line wins over the defaults, both are recorded.
    assert saved["decoder"]["embed"] == 8 and saved["train"]["lr_decoder"] == 0.002
    assert saved["langevin"]["k0"] == 3 and saved["train"]["max_steps"] == 4
    steps = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in steps if m.get("kind") != "eval"] == [1, 2, 3, 4]
    assert sum(m.get("kind") == "eval" for m in steps) == 2
    assert (tmp_path / "runs" / "latest").read_text().strip() == str(run.resolve())


def test_train_rejects_bad_options_in_one_line(tmp_path):
    r = runner.invoke(app, ["train", "demo", "--prior", "laplace", "--out", str(tmp_path / "r"), *TINY])
    assert r.exit_code == 2 and "Traceback" not in r.output and "prior" in r.output
    assert not (tmp_path / "r").exists()   # nothing written for a run that cannot start
    bad = tmp_path / "bad.toml"
    bad.write_text("[train]\nnot_a_key = 1\n")
    r = runner.invoke(app, ["train", "demo", "--config", str(bad), *TINY])
    assert r.exit_code == 2 and "not_a_key" in r.output


def test_train_on_sentencepiece_units_and_sample_words(tmp_path, monkeypatch):
    import textebm

    r = runner.invoke(app, ["train", "demo", "--tokenizer", "spm", "--vocab-size", "200",
                            "--out", str(tmp_path / "spm"), *TINY])
    assert r.exit_code == 0, r.output
    run = tmp_path / "spm"
    assert (run / "spm.model").is_file()
    vocab = (run / "vocab.txt").read_text().split("\n")
    assert any(w.startswith("\u2581") for w in vocab)          # the model's units are pieces
    m = textebm.load(run)
    assert m.encode(["the chef baked a cake ."]).n_unk == 0      # words -> pieces on the way in
    for s in m.sample(5, seed=0, max_len=30):                     # pieces -> words on the way out
        assert "\u2581" not in s


def test_recipe_and_chain_options_reach_the_run_config(tmp_path):
    out = tmp_path / "r"
    r = runner.invoke(app, ["train", "demo", "--out", str(out), "--recipe", "sri",
                            "--noise1", "0.3", "--posterior-init", "persistent", "--noise0", "0.9",
                            "--sample-noise0", "0.7", "--grad-penalty", "0.5", "--decoder-noise", "0.1",
                            *TINY])
    assert r.exit_code == 0, r.output
    lc = json.loads((out / "config.json").read_text())["langevin"]
    # The preset sets the schedule; the explicit options win over it; everything is recorded.
    assert lc["s1_schedule"][:3] == [0.8, 0.7, 0.6] and lc["noise1"] == 0.3
    assert lc["init1"] == "persistent" and lc["noise0"] == 0.9 and lc["sample_noise0"] == 0.7
    t = json.loads((out / "config.json").read_text())["train"]
    assert (t["grad_penalty"], t["decoder_noise"]) == (0.5, 0.1)
    # --posterior is the recipe's old name, still accepted.
    r = runner.invoke(app, ["train", "demo", "--out", str(tmp_path / "p"), "--posterior", "paper", *TINY])
    lc = json.loads((tmp_path / "p" / "config.json").read_text())["langevin"]
    assert (lc["s1"], lc["s1_schedule"], lc["noise1"], lc["init1"]) == (0.1, [], 1.0, "noise")
    assert lc["sample_noise0"] is None  # Table 5 samples with the training chain (noise 1)
    # ... and the EBM learns as in Algorithm 1, as in the default; `steady` adds a late start, two
    # updates per iteration against 150-step chains and a weight average.
    t = json.loads((tmp_path / "p" / "config.json").read_text())["train"]
    assert (t["prior_start"], t["prior_updates"], t["ema"]) == (0, 1, 0.0)
    # The default (`coherent`) bounds the slope and warms the posterior chain; the older recipes
    # keep theirs.
    for preset, want in ((None, (0, 1, 0.0, 200, 1.0, 0.8)), ("steady", (50, 2, 0.995, 150, 0.0, 0.2)),
                         ("encoder", (0, 1, 0.0, 200, 0.0, 0.2))):
        args = ["--recipe", preset] if preset else []
        r = runner.invoke(app, ["train", "demo", "--out", str(tmp_path / f"d{preset}"), *args,
                                *TINY[:4], *TINY[6:]])
        assert r.exit_code == 0, r.output
        d = json.loads((tmp_path / f"d{preset}" / "config.json").read_text())
        got = (d["train"]["prior_start"], d["train"]["prior_updates"], d["train"]["ema"], d["langevin"]["k0"],
               d["train"]["grad_penalty"], d["langevin"]["noise1"])
        assert got == want, preset
    for bad in (["--recipe", "nope"], ["--recipe", "sri", "--posterior", "paper"],
                ["--posterior-init", "nope"], ["--s1-schedule", "0.5,x"]):
        r = runner.invoke(app, ["train", "demo", "--out", str(tmp_path / "bad"), *bad, *TINY])
        assert r.exit_code == 2 and "Traceback" not in r.output, bad


def test_compiled_prior_chain_trains_the_same_model(tmp_path):
    # --compile runs the prior chain compiled: recorded in config.json, and the same seed gives
    # the same weights as the eager run up to float rounding (a chain that let gradients flow
    # back through its steps, or read stale weights, would move the EBM elsewhere).
    import warnings
    import pytest
    from textebm.api import load
    small = tmp_path / "small.toml"
    small.write_text("[decoder]\nembed = 8\nhidden = 16\n[prior]\nhidden = 16\n")
    for name, flag in (("eager", []), ("compiled", ["--compile"])):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            r = runner.invoke(app, ["train", "demo", "--config", str(small), "--out",
                                    str(tmp_path / name), "--k0", "10", *TINY[2:],
                                    "--max-steps", "3", *flag])
        assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "compiled" / "config.json").read_text())["train"]["compile"]
    if any("running eagerly" in str(w.message) for w in caught):
        pytest.skip("torch.compile is unavailable here; the chain ran eagerly")
    a, b = load(tmp_path / "eager").model, load(tmp_path / "compiled").model
    diff = max((p - q).abs().max().item() for p, q in zip(a.parameters(), b.parameters()))
    assert diff < 1e-5, diff


def test_training_options_reach_the_run_config_and_bad_values_fail_in_one_line(tmp_path):
    out = tmp_path / "r"
    r = runner.invoke(app, ["train", "demo", "--out", str(out), "--ema", "0.9", "--prior-updates", "2",
                            "--prior-start", "1", "--lr-final", "0.5", "--prior-chains", "24", *TINY])
    assert r.exit_code == 0, r.output
    t = json.loads((out / "config.json").read_text())["train"]
    assert (t["ema"], t["prior_updates"], t["prior_start"], t["lr_final"], t["prior_chains"]) == (0.9, 2, 1, 0.5, 24)
    for bad in (["--ema", "1"], ["--ema", "-0.1"], ["--prior-updates", "0"], ["--prior-chains", "-1"]):
        r = runner.invoke(app, ["train", "demo", "--out", str(tmp_path / "bad"), *bad, *TINY])
        assert r.exit_code == 2 and "Traceback" not in r.output, bad
        assert not (tmp_path / "bad").exists()


def test_benchmark_settings_parse_to_overrides_and_reject_malformed_items():
    """SECTION.KEY=JSON items (studies/latent_study.py --set, bench/train_step.py @...) become the
    nested dict override() applies; JSON values keep their types."""
    from textebm.config import for_corpus, override, parse_settings
    got = parse_settings(["train.ema=0.995", "langevin.k0=150", "train.prior_updates=2",
                          "langevin.s1_schedule=[0.5, 0.2]"])
    assert got == {"train": {"ema": 0.995, "prior_updates": 2},
                   "langevin": {"k0": 150, "s1_schedule": [0.5, 0.2]}}
    cfg = override(for_corpus("demo"), got)
    assert (cfg.train.ema, cfg.train.prior_updates, cfg.langevin.k0) == (0.995, 2, 150)
    for bad in ("train.ema", "ema=0.9", ".ema=0.9", "train.=1"):
        with pytest.raises(ValueError):
            parse_settings([bad])


def test_a_run_too_short_to_leave_pretraining_says_so(tmp_path):
    # `pretrained` (PTB's default) spends its first 3,000 iterations without the prior; a shorter
    # run is an autoencoder, and the command says so before it starts.
    r = runner.invoke(app, ["train", "demo", "--recipe", "pretrained", "--out", str(tmp_path / "r"), *TINY])
    assert r.exit_code == 0, r.output
    assert "prior never trains" in r.output and "--pretrain-steps 0" in r.output
    t = json.loads((tmp_path / "r" / "config.json").read_text())["train"]
    assert (t["recipe"], t["pretrain_steps"], t["decoder_noise"]) == ("pretrained", 3000, 0.5)
    r = runner.invoke(app, ["train", "demo", "--out", str(tmp_path / "d"), *TINY])
    assert r.exit_code == 0 and "never trains" not in r.output


def test_a_noise_start_under_a_pretraining_recipe_names_the_way_out(tmp_path):
    # Pretraining trains the encoder as the chain's start, so `--posterior-init noise` under the
    # pretrained recipe (PTB's default) stops before training with the flags that lift it.
    r = runner.invoke(app, ["train", "demo", "--recipe", "pretrained", "--posterior-init", "noise",
                            "--out", str(tmp_path / "r"), *TINY])
    assert r.exit_code != 0 and "--pretrain-steps 0" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "r" / "checkpoint.pt").exists()
    r = runner.invoke(app, ["train", "demo", "--recipe", "pretrained", "--posterior-init", "noise",
                            "--pretrain-steps", "0", "--out", str(tmp_path / "n"), *TINY])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "n" / "config.json").read_text())["langevin"]["init1"] == "noise"


def test_set_reaches_any_field_parsed_by_its_type(tmp_path):
    out = tmp_path / "r"
    r = runner.invoke(app, ["train", "demo", "--out", str(out), *TINY, "--set", "langevin.sample_noise0=none",
                            "--set", "langevin.s1_schedule=0.5,0.2", "--set", "decoder.word_dropout=0.1",
                            "--set", "train.compile=false", "--set", "prior.kind=gaussian",
                            "--set", "langevin.read_schedule=none", "--set", "langevin.k0=7"])
    assert r.exit_code == 0, r.output
    d = json.loads((out / "config.json").read_text())
    lc = d["langevin"]
    assert (lc["k0"], lc["k1"], lc["sample_noise0"], lc["s1_schedule"], lc["read_schedule"]) == \
        (7, 2, None, [0.5, 0.2], [])                             # a later --set wins
    assert (d["decoder"]["word_dropout"], d["train"]["compile"], d["prior"]["kind"]) == (0.1, False, "gaussian")
    assert d["train"]["batch_size"] == 8 and isinstance(lc["k0"], int)
    assert "note:" not in r.output                              # the new spelling needs no note


def one_line_error(r) -> str:
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), r.output
    assert "Traceback" not in r.output
    return lines[0]


def test_an_unknown_setting_or_flag_is_one_line_naming_the_closest(tmp_path):
    r = runner.invoke(app, ["train", "demo", "--set", "langevin.kk0=7", "--out", str(tmp_path / "r"), *TINY])
    assert "langevin.k0" in one_line_error(r) and not (tmp_path / "r").exists()
    assert "train.batch_size" in one_line_error(runner.invoke(app, ["config", "demo", "--set", "train.batchsize=8"]))
    assert "langevin.k0" in one_line_error(runner.invoke(app, ["config", "demo", "--set", "lang.k0=8"]))
    line = one_line_error(runner.invoke(app, ["config", "demo", "--set", "langevin.k0=seven"]))
    assert "langevin.k0" in line and "whole number" in line
    assert "SECTION.KEY=VALUE" in one_line_error(runner.invoke(app, ["config", "demo", "--set", "k0=7"]))
    assert "--k0" in one_line_error(runner.invoke(app, ["train", "demo", "--kk0", "7", *TINY]))
    assert "--max-steps" in one_line_error(runner.invoke(app, ["train", "demo", "--max-step", "7"]))
    assert "needs a value" in one_line_error(runner.invoke(app, ["train", "demo", "--quiet", "--k0"]))


def test_the_old_flags_still_work_with_one_note_naming_the_new_spelling(tmp_path):
    from textebm.config import OLD_FLAGS, RECIPES, setting_field
    for flag, target in OLD_FLAGS.items():     # every entry of the table names a real setting
        if not target.startswith("--"):
            setting_field(target.partition("=")[0])
    out = tmp_path / "old"
    r = runner.invoke(app, ["train", "demo", "--out", str(out), "--k0", "7", "--max-steps", "1",
                            "--batch-size=8", "--eval-every", "0", "--quiet", "--threads", "1"])
    assert r.exit_code == 0, r.output
    notes = [ln for ln in r.stderr.splitlines() if ln.startswith("note:")]
    assert notes == ["note: --k0 7 --batch-size 8 --eval-every 0 is now --set langevin.k0=7 "
                     "--set train.batch_size=8 --set train.eval_every=0"]
    d = json.loads((out / "config.json").read_text())
    assert (d["langevin"]["k0"], d["train"]["batch_size"], d["train"]["max_steps"]) == (7, 8, 1)
    # Switches, renamed options and an argument after the old flags read as they did.
    r = runner.invoke(app, ["config", "--compile", "--posterior", "paper", "--clip", "2", "demo"])
    assert r.exit_code == 0, r.output
    assert r.stderr.strip() == ("note: --compile --posterior paper --clip 2 is now --set "
                                "train.compile=true --recipe paper --set train.clip_decoder=2")
    import tomllib
    t = tomllib.loads(r.stdout)["train"]
    assert (t["compile"], t["recipe"], t["clip_decoder"]) == (True, "paper", 2.0)
    assert "paper" in RECIPES


def test_config_prints_toml_that_config_reads_back_to_the_same_settings(tmp_path):
    import tomllib
    from textebm.config import RECIPES, build_config
    for corpus in ("demo", "ptb"):
        for name in RECIPES:
            r = runner.invoke(app, ["config", corpus, "--recipe", name])
            assert r.exit_code == 0, r.output
            printed = tomllib.loads(r.stdout)
            assert build_config(corpus, name, printed) == build_config(corpus, name), (corpus, name)
    # Through the command line: `--config` of the printed file with a --set on top prints the
    # same file but for that setting (and the title).
    f = tmp_path / "paper.toml"
    f.write_text(runner.invoke(app, ["config", "ptb", "--recipe", "paper"]).stdout)
    again = runner.invoke(app, ["config", "ptb", "--config", str(f)]).stdout
    body = lambda text: [ln for ln in text.splitlines() if not ln.startswith("#")]  # noqa: E731
    assert body(again) == body(f.read_text())
    seven = body(runner.invoke(app, ["config", "ptb", "--config", str(f), "--set", "langevin.k0=7"]).stdout)
    changed = [a for a, b in zip(seven, body(f.read_text())) if a != b]
    assert len(changed) == 1 and changed[0].startswith("k0 = 7  #")
    assert 'sample_noise0 = "none"' in f.read_text()   # None as TOML has no null


def test_help_keeps_its_brackets_and_stays_short():
    r = runner.invoke(app, ["train", "--help"], terminal_width=80)
    assert r.exit_code == 0 and "[prior]" in r.stdout and "[langevin]" in r.stdout
    assert len(r.stdout.splitlines()) <= 45


def test_a_resume_keeps_the_record_and_names_what_it_ignores(tmp_path):
    out = tmp_path / "r"
    r = runner.invoke(app, ["train", "demo", "--out", str(out), *TINY])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["train", "demo", "--resume", str(out), "--max-steps", "5", "--set",
                            "langevin.k0=9", "--seed", "0", "--quiet", "--threads", "1"])
    assert r.exit_code == 0, r.output
    assert "ignored: langevin.k0=9 (recorded 3)" in r.stderr and "train.seed" not in r.stderr
    d = json.loads((out / "config.json").read_text())
    assert (d["langevin"]["k0"], d["train"]["max_steps"]) == (3, 5)


def test_a_failed_start_leaves_latest_on_the_last_readable_run(tmp_path, monkeypatch):
    # A run folder becomes runs/latest only once it holds a checkpoint: a start that fails (a
    # corpus without its train split) removes the folder it made and leaves latest where it was,
    # and `sample` without --checkpoint reads the earlier run, naming it on stderr.
    from textebm.runs import FAILED, list_runs, settle_failed_run
    monkeypatch.setenv("TEXTEBM_RUNS", str(tmp_path / "runs"))
    r = runner.invoke(app, ["train", "demo", *TINY])
    assert r.exit_code == 0, r.output
    latest = tmp_path / "runs" / "latest"
    demo_run = latest.read_text().strip()
    assert demo_run.startswith(str((tmp_path / "runs" / "demo").resolve()))
    data = tmp_path / "data" / "yahoo"
    data.mkdir(parents=True)
    for split in ("valid", "test"):
        (data / f"yahoo.{split}.txt").write_text("a b c\nd e f\n")
    r = runner.invoke(app, ["train", "yahoo", "--data-dir", str(tmp_path / "data"), *TINY])
    assert r.exit_code == 2 and "train split is missing" in r.stderr, r.output
    assert "runs/latest is unchanged" in r.stderr
    assert latest.read_text().strip() == demo_run
    assert not (tmp_path / "runs" / "yahoo").exists()           # the empty folder is gone
    r = runner.invoke(app, ["sample", "--steps", "5", "--num", "2", "--seed", "0"])
    assert r.exit_code == 0, r.output
    assert f"run: {demo_run} (the latest" in r.stderr
    assert len(r.stdout.strip().splitlines()) == 2
    # A run that stopped after some steps but before its first checkpoint is kept, marked failed,
    # and latest still does not move to it.
    kept = tmp_path / "runs" / "demo" / "diverged"
    kept.mkdir()
    (kept / "config.json").write_text((tmp_path / "runs" / "demo").joinpath(
        demo_run.rsplit("/", 1)[1], "config.json").read_text())
    (kept / "metrics.jsonl").write_text('{"step": 1}\n')
    assert settle_failed_run(kept, True, ValueError("boom")) == "failed"
    assert "ValueError: boom" in (kept / FAILED).read_text()
    assert latest.read_text().strip() == demo_run
    assert {r["run"]: r["status"] for r in list_runs(tmp_path / "runs")}[str(kept)] == "failed"
    # A marker left (by an older version) on a folder without a checkpoint falls back to the
    # newest run that has one.
    latest.write_text(str(kept) + "\n")
    r = runner.invoke(app, ["sample", "--steps", "5", "--num", "1", "--seed", "0"])
    assert r.exit_code == 0 and f"run: {demo_run}" in r.stderr, r.output


def test_one_training_time_figure_with_validation_beside_it(tmp_path, monkeypatch):
    # Training seconds leave validation out (and validation stops the time budget's clock):
    # `done`, summary.json, `textebm runs --json` and the checkpoint give the same figure, and
    # validation's seconds (each eval line's, summed) stand beside it.
    import re
    import time
    import torch
    import textebm.train as train_mod
    real = train_mod.validation_metrics

    def slow_validation(*a, **k):
        time.sleep(0.5)
        return real(*a, **k)
    monkeypatch.setattr(train_mod, "validation_metrics", slow_validation)
    run = tmp_path / "run"
    r = runner.invoke(app, ["train", "demo", "--out", str(run), *TINY])
    assert r.exit_code == 0, r.output
    summary = json.loads((run / "summary.json").read_text())
    evals = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    evals = [m for m in evals if m.get("kind") == "eval"]
    assert len(evals) == 2 and all(m["valid_seconds"] >= 0.5 for m in evals)
    assert summary["valid_seconds"] == pytest.approx(sum(m["valid_seconds"] for m in evals))
    # The two sleeps are off the training clock, on the session's wall clock.
    assert summary["train_seconds"] <= summary["seconds"] - 1.0
    r2 = runner.invoke(app, ["runs", str(tmp_path), "--json"])
    row = [json.loads(l) for l in r2.stdout.splitlines()][0]
    assert row["train_seconds"] == summary["train_seconds"]
    assert row["valid_seconds"] == summary["valid_seconds"]
    done = re.search(r"done: 4 steps, (\d+) s of training, (\d+) s of validation", r.stdout)
    assert done and int(done[1]) == round(summary["train_seconds"])
    assert int(done[2]) == round(summary["valid_seconds"])
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    assert ckpt["train_seconds"] == summary["train_seconds"]
