"""textebm.config: one builder, one written order of layers, recipes, and old config.json files
loading as what they ran."""
import json
from dataclasses import asdict
from pathlib import Path

import pytest

from textebm.config import (DEFAULT_RECIPE, LEGACY, RECIPES, LangevinConfig, RunConfig, TrainConfig,
                            build_config, for_corpus, setting_flags)

ROOT = Path(__file__).resolve().parents[1]


def test_field_defaults_are_the_default_recipe():
    # A bare config is what `textebm train` runs by default: no third place to read.
    lc, t = asdict(LangevinConfig()), asdict(TrainConfig())
    for k, v in RECIPES[DEFAULT_RECIPE]["langevin"].items():
        assert lc[k] == v, k
    for k, v in RECIPES[DEFAULT_RECIPE]["train"].items():
        assert t[k] == v, k
    assert build_config("ptb").to_dict() == for_corpus("ptb").to_dict()


def test_layers_apply_in_order_corpus_recipe_toml_flags():
    cfg = build_config("demo")
    assert (cfg.decoder.embed, cfg.decoder.hidden, cfg.train.max_steps) == (64, 128, 1500)
    paper = build_config("demo", "paper")
    assert (paper.langevin.k0, paper.langevin.k1, paper.langevin.s1_schedule) == (60, 20, [])
    assert paper.train.max_steps == 1500                       # the recipe leaves the corpus layer
    toml = {"langevin": {"k0": 80}, "train": {"max_steps": 7}}
    both = build_config("demo", "paper", toml, {"langevin": {"k0": 90, "k1": None}})
    assert (both.langevin.k0, both.langevin.k1, both.train.max_steps) == (90, 20, 7)
    with pytest.raises(ValueError, match="unknown recipe"):
        build_config("demo", "nope")
    with pytest.raises(ValueError):
        build_config("demo", None, {"langevin": {"k0": -1}})   # validated before it is returned


def test_a_constant_s1_replaces_the_recipes_schedule():
    # --s1 used to do nothing while a schedule was set (always, by default).
    cfg = build_config("demo", None, None, {"langevin": {"s1": 0.07}})
    assert cfg.langevin.s1_schedule == [] and cfg.langevin.posterior_steps() == 0.07
    both = build_config("demo", None, None, {"langevin": {"s1": 0.07, "s1_schedule": [0.3, 0.1]}})
    assert both.langevin.posterior_steps() == [0.3, 0.1]


def test_recipes_do_not_share_mutable_lists():
    a, b = build_config("demo"), build_config("demo")
    a.langevin.s1_schedule.append(9.0)
    assert b.langevin.s1_schedule[-1] != 9.0 and RECIPES["encoder"]["langevin"]["s1_schedule"][-1] != 9.0


def test_a_config_without_the_newer_fields_loads_as_the_code_then_ran():
    # Before the read chain, the sampling noise and the defaults' move to the `encoder` recipe
    # existed, a run's chain was paper Table 5's wherever its config.json was silent.
    old = {"langevin": {"k0": 60, "s0": 0.4, "k1": 20, "s1": 0.1, "noise1": 1.0, "init1": "noise"},
           "train": {"corpus": "demo"}}
    lc = RunConfig.from_dict(old).langevin
    assert (lc.s1_schedule, lc.read_schedule, lc.read_noise1, lc.sample_noise0) == ([], [], None, None)
    assert lc.sampling_noise() == 1.0 and lc.posterior_steps(read=True) == 0.1
    assert lc.prior_buffer == 0 and RunConfig.from_dict(old).train.grad_penalty == 0.0
    assert set(LEGACY["langevin"]) <= set(asdict(lc))


def test_every_committed_run_config_loads_as_recorded():
    paths = sorted(ROOT.glob("results/**/config.json"))
    assert paths
    for p in paths:
        d = json.loads(p.read_text())
        got = RunConfig.from_dict(d).to_dict()
        for section, values in d.items():
            for k, v in values.items():
                assert got[section][k] == v, (p, section, k)


def test_the_recipes_build_what_the_committed_demo_runs_ran():
    # results/demo/s0 is `textebm train demo` from before the builder, under the `encoder` recipe
    # (the default then); results/demo/gp1n8-s0 is the `coherent` recipe's evidence, trained as
    # `encoder` with studies/coherence_levers/gp1n8.toml before it had a name.
    set_at_start = {("decoder", "vocab_size"), ("train", "precision_used"), ("train", "recipe")}
    for run, name in (("s0", "encoder"), ("gp1n8-s0", "coherent"), ("gp1n8-s0", None)):
        d = json.loads((ROOT / "results" / "demo" / run / "config.json").read_text())
        built = build_config("demo", name).to_dict()
        for section, values in d.items():
            for k, v in values.items():
                if (section, k) not in set_at_start:
                    assert built[section][k] == v, (run, section, k)
    assert build_config("demo").train.recipe == "coherent"


def test_study_settings_name_the_recipe_their_rows_measured():
    # The studies' `default` rows were measured under `encoder`; their TOML files change it.
    levers = ROOT / "studies" / "coherence_levers"
    assert setting_flags("default", levers) == ["--recipe", "encoder"]
    assert setting_flags("coherent", levers) == ["--recipe", "coherent"]
    assert setting_flags("gp1n8", levers) == ["--recipe", "encoder", "--config", str(levers / "gp1n8.toml")]
    with pytest.raises(ValueError, match="nope"):
        setting_flags("nope", levers)
    # A precision tail measures precision as a lever on any setting, and only a known one.
    assert setting_flags("pretrained:bf16", levers) == ["--recipe", "pretrained", "--precision", "bf16"]
    assert setting_flags("gp1n8:fp32", levers)[-2:] == ["--precision", "fp32"]
    with pytest.raises(ValueError, match="precision must be one of"):
        setting_flags("coherent:fp16", levers)


def test_ptb_defaults_to_the_setting_the_time_to_quality_bench_chose():
    # `pretrained` is the bench's `pretrain-coherent` setting (a TOML on `encoder`) by name; the
    # other corpora keep `coherent`, and naming a recipe on PTB still runs it unchanged.
    import tomllib
    toml = ROOT / "bench" / "time_to_quality" / "pretrain-coherent.toml"
    measured = build_config("ptb", "encoder", tomllib.loads(toml.read_text())).to_dict()
    default = build_config("ptb").to_dict()
    assert default["train"].pop("recipe") == "pretrained" and measured["train"].pop("recipe") == "encoder"
    assert default == measured
    assert (default["train"]["pretrain_steps"], default["train"]["decoder_noise"]) == (3000, 0.5)
    for name in ("coherent", "encoder", "paper", "gaussian"):
        t = build_config("ptb", name).train
        assert (t.recipe, t.pretrain_steps, t.decoder_noise) == (name, 0, 0.0)
    for corpus in ("demo", "yahoo", "snli", "mytext"):
        assert build_config(corpus).train.recipe == "coherent"


def test_the_gaussian_twin_setting_is_the_gaussian_recipe_with_ptbs_pretraining():
    # bench/time_to_quality/pretrain-gaussian.toml (on `encoder`, as every bench TOML) is the fair
    # baseline of the PTB default: what `--recipe gaussian --pretrain-steps 3000 --decoder-noise
    # 0.5` builds. sample_noise0 = 1 there is noise0 (1) spelled out, as TOML has no None.
    import tomllib
    toml = ROOT / "bench" / "time_to_quality" / "pretrain-gaussian.toml"
    twin = build_config("ptb", "encoder", tomllib.loads(toml.read_text()))
    flags = build_config("ptb", "gaussian", None, {"train": {"pretrain_steps": 3000, "decoder_noise": 0.5}})
    assert twin.langevin.sample_noise0 == flags.langevin.noise0 == 1.0 and flags.langevin.sample_noise0 is None
    twin.langevin.sample_noise0, twin.train.recipe = None, "gaussian"
    assert twin.to_dict() == flags.to_dict()
    pretrained = build_config("ptb")
    assert (twin.train.pretrain_steps, twin.train.decoder_noise) == (pretrained.train.pretrain_steps,
                                                                      pretrained.train.decoder_noise)
