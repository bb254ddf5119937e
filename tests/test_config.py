"""textebm.config: one builder, one written order of layers, recipes, and old config.json files
loading as what they ran."""
import json
from dataclasses import asdict
from pathlib import Path

import pytest

from textebm.config import (DEFAULT_RECIPE, LEGACY, OLD_FLAGS, RECIPES, RESUME_MAY_CHANGE,
                            LangevinConfig, RunConfig, TrainConfig, build_config, for_corpus,
                            parse_settings, resume_config, resume_ignored, setting_field,
                            setting_flags, setting_keys, to_toml, translate_flags)

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
    both = build_config("demo", "paper", toml, {"langevin": {"k0": 90}})
    assert (both.langevin.k0, both.langevin.k1, both.train.max_steps) == (90, 20, 7)
    # The command line names only what was given, so None is a value it can set.
    assert build_config("demo", None, None, {"langevin": {"sample_noise0": None}}).langevin.sample_noise0 is None
    with pytest.raises(ValueError, match="unknown recipe"):
        build_config("demo", "nope")
    with pytest.raises(ValueError):
        build_config("demo", None, {"langevin": {"k0": -1}})   # validated before it is returned


def test_a_constant_s1_replaces_the_recipes_schedule():
    # --s1 used to do nothing while a schedule was set (always, by default).
    cfg = build_config("demo", None, None, {"langevin": {"s1": 0.07}})
    assert cfg.langevin.s1_schedule == [] and cfg.langevin.posterior_step_sizes() == 0.07
    both = build_config("demo", None, None, {"langevin": {"s1": 0.07, "s1_schedule": [0.3, 0.1]}})
    assert both.langevin.posterior_step_sizes() == [0.3, 0.1]


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
    assert lc.sampling_noise() == 1.0 and lc.posterior_step_sizes(read=True) == 0.1
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
    # The studies' `default` rows were measured under `encoder`, the name they use now; `default`
    # still reads as it. Their TOML files change `encoder`.
    levers = ROOT / "studies" / "coherence_levers"
    assert setting_flags("default", levers) == setting_flags("encoder", levers) == ["--recipe", "encoder"]
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


def test_every_setting_is_declared_once_with_its_help():
    keys = setting_keys()
    assert len(keys) == len(set(keys)) and "langevin.k0" in keys and "train.clip_decoder" in keys
    assert all(setting_field(k)[1].metadata.get("help") for k in keys)


def test_set_values_parse_by_the_fields_type():
    got = parse_settings(["langevin.k0=7", "langevin.s0=0.3", "prior.kind=gaussian", "train.compile=true",
                          "train.time_budget=none", "train.vocab_size=", "langevin.s1_schedule=0.5, 0.2",
                          "langevin.read_schedule=none", "train.recipe=paper", "langevin.noise1=1"])
    assert got == {"langevin": {"k0": 7, "s0": 0.3, "s1_schedule": [0.5, 0.2], "read_schedule": [],
                                "noise1": 1.0},
                   "prior": {"kind": "gaussian"},
                   "train": {"compile": True, "time_budget": None, "vocab_size": None, "recipe": "paper"}}
    assert isinstance(got["langevin"]["k0"], int) and isinstance(got["langevin"]["noise1"], float)
    assert parse_settings(["train.compile=off", "langevin.s1_schedule="]) == \
        {"train": {"compile": False}, "langevin": {"s1_schedule": []}}
    for bad, said in (("langevin.k0=7.5", "whole number"), ("langevin.s0=fast", "a number"),
                      ("train.compile=maybe", "true or false"), ("langevin.s1_schedule=0.5,x", "comma"),
                      ("langevin.kk0=7", "langevin.k0"), ("posterior.k0=7", "langevin.k0"),
                      ("langevin.k0", "SECTION.KEY=VALUE"), ("langevin.sample_k0=x", "or none")):
        with pytest.raises(ValueError, match=said):
            parse_settings([bad])


def test_the_old_flags_translate_through_one_table():
    got = translate_flags(["--k0", "7", "--s1-schedule=none", "--no-compile", "--posterior", "paper",
                           "--clip", "2"])
    assert got.settings == ["langevin.k0=7", "langevin.s1_schedule=none", "train.compile=false",
                            "train.clip_decoder=2"]
    assert got.options == {"--recipe": "paper"} and got.words == []
    assert got.note == ("note: --k0 7 --s1-schedule none --no-compile --posterior paper --clip 2 is now "
                        "--set langevin.k0=7 --set langevin.s1_schedule=none --set train.compile=false "
                        "--recipe paper --set train.clip_decoder=2")
    assert parse_settings(got.settings)["langevin"] == {"k0": 7, "s1_schedule": []}
    assert OLD_FLAGS["--posterior-init"] == "langevin.init1"
    with pytest.raises(ValueError, match="did you mean --k0"):
        translate_flags(["--kk0", "7"])
    with pytest.raises(ValueError, match="takes no value"):
        translate_flags(["--compile=1"])
    assert translate_flags(["demo", "--k1", "2"]).words == ["demo"]
    # --s1 from the command line still clears the recipe's schedule (a constant step).
    cfg = build_config("demo", None, None, parse_settings(translate_flags(["--s1", "0.07"]).settings))
    assert cfg.langevin.s1_schedule == [] and cfg.langevin.s1 == 0.07


def test_printed_toml_reads_back_to_the_same_config_for_every_recipe():
    import tomllib
    for corpus in ("demo", "ptb", "yahoo", "mytext"):
        for name in RECIPES:
            cfg = build_config(corpus, name, None, {"train": {"time_budget": 30.0}} if name == "steady" else None)
            text = to_toml(cfg, "title\nsecond line")
            assert text.startswith("# title\n# second line\n") and "corpus =" not in text
            back = build_config(corpus, name, tomllib.loads(text))
            assert back == cfg, (corpus, name)


def test_resume_config_keeps_the_record_but_the_length():
    saved = build_config("demo", "paper", None, {"langevin": {"k0": 3}, "train": {"time_budget": 5.0}})
    before = saved.to_dict()
    assert RESUME_MAY_CHANGE == ("train.max_steps", "train.time_budget")
    same = resume_config(saved, None, None)
    assert same == saved and same is not saved
    longer = resume_config(saved, 4000, 9.5)
    assert (longer.train.max_steps, longer.train.time_budget) == (4000, 9.5)
    longer.train.max_steps, longer.train.time_budget = saved.train.max_steps, saved.train.time_budget
    assert longer == saved and saved.to_dict() == before           # nothing else moves, SAVED unchanged
    for bad in ((-1, None), (None, 0.0)):
        with pytest.raises(ValueError):
            resume_config(saved, *bad)
    given = {"langevin": {"k0": 9, "s0": 0.4}, "train": {"max_steps": 10, "seed": 0, "time_budget": 1.0},
             "prior": {"kind": "gaussian"}}
    assert resume_ignored(saved, given) == ["langevin.k0=9 (recorded 3)", "prior.kind=gaussian (recorded ebm)"]
