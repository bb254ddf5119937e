"""`textebm evaluate` end to end: eval.json with FPPL/RPPL, NLL and the latent diagnostics, for a
word-level run and a sentencepiece run (whose NLL must go through the run's own tokenizer)."""
import json

import pytest
import torch
from typer.testing import CliRunner

from cli import app
from textebm.ais import AISConfig
from textebm.nll import NLLConfig, importance_nll
from textebm.api import load

runner = CliRunner()
TINY = ["--max-steps", "6", "--batch-size", "16", "--k0", "3", "--k1", "3", "--eval-every", "0",
        "--quiet", "--threads", "1"]
EVAL = ["--num-samples", "60", "--nll-sentences", "12", "--nll-samples", "8",
        "--logz-temperatures", "200", "--coherence-temperatures", "200", "--diag-sentences", "30",
        "--json"]


@pytest.mark.parametrize("tokenizer", ["word", "spm"])
def test_evaluate_writes_table2_row_and_latent_diagnostics(tmp_path, tokenizer):
    run = tmp_path / "run"
    cfg = tmp_path / "small.toml"
    cfg.write_text("[decoder]\nembed = 8\nhidden = 16\n")
    extra = ["--tokenizer", "spm", "--vocab-size", "200"] if tokenizer == "spm" else []
    r = runner.invoke(app, ["train", "demo", "--config", str(cfg), "--out", str(run), *TINY, *extra])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["evaluate", "--checkpoint", str(run), *EVAL])
    assert r.exit_code == 0, r.output
    res = json.loads((run / "eval.json").read_text())
    assert res["fppl"] > 1 and res["rppl"] > 1 and res["samples_generated"] == 60
    # Samples come from the prior chain at the run's sampling noise (the default preset's).
    from textebm.config import SAMPLE_NOISE
    assert res["sample_noise"] == SAMPLE_NOISE
    lat = res["latent"]
    for k in ("gap_nats_tok", "active_units", "mutual_info", "topic_probe_acc",
              "impossible_share", "samples_exact_nll_tok", "posterior_impossible_share",
              "posterior_samples_exact_nll_tok"):
        assert k in lat, k
    assert 0 <= lat["impossible_share"] <= 1 and lat["mutual_info"] <= lat["mutual_info_max"] + 1e-9
    assert "| paper" not in (run / "eval.md").read_text()  # demo has no paper row
    # The NLL is the estimator's on the run's own units: a direct call on the same tokenized
    # test sentences (same seed) gives the same number.
    tm = load(run)
    from corpora.registry import load_corpus
    from pipeline.evaluate import nll_subset
    test = load_corpus("demo").split("test")
    pick = nll_subset(len(test), 12, 0)
    assert len(pick) == 12 and pick != list(range(12)) and pick == sorted(set(pick))
    assert res["nll"]["of_test"] == f"random 12 of {len(test)} (seed 0)"
    ids = tm.encode([test[i] for i in pick]).ids
    if tokenizer == "spm":
        assert sum(i == tm.vocab.stoi["<unk>"] for s in ids for i in s) == 0
    torch.set_num_threads(1)
    direct = importance_nll(tm.model, ids, NLLConfig(samples=8, seed=0,
                                                     ais=AISConfig(temperatures=200, seed=0)))
    assert res["nll"]["nll"] == pytest.approx(direct["nll"], rel=1e-6)
    assert res["nll"]["tokens"] == direct["tokens"]
    # What every NLL carries: the estimator, log Z's runs and spread, the weights' ESS, the floor
    # check on every sentence, and on demo the grammar's exact NLL of the same sentences.
    nll = res["nll"]
    assert nll["estimator"] and len(nll["log_z_estimate"]["per_run"]) == 3
    assert nll["floor"]["checked"] == 12 and 1 <= nll["ess"]["median"] <= 8
    check = nll["grammar_check"]
    assert check["model_minus_exact"] == pytest.approx(nll["nll"] - check["exact_nll"], rel=1e-9)
    per = json.loads((run / "nll_sentences.json").read_text())
    assert per["test_index"] == pick and len(per["nll"]) == len(per["floor"]) == 12


def test_samples_are_written_in_chunks(tmp_path, monkeypatch):
    # evaluate draws its samples a chunk at a time into samples.txt: every sample lands there,
    # the first chunk is exactly what one sample_chains call with the seed gives, and the
    # streamed file scores as the same sentences held in a list do.
    import pipeline.evaluate as ev
    from corpora.registry import load_corpus
    from lm_eval.perplexity import PPLConfig, SampleFile, perplexities
    run = tmp_path / "run"
    r = runner.invoke(app, ["train", "demo", "--out", str(run), *TINY])
    assert r.exit_code == 0, r.output
    tm = load(run)
    monkeypatch.setattr(ev, "SAMPLE_CHUNK", 7)
    noise = ev.write_samples(tm, tmp_path / "s.txt", ev.EvalConfig(num_samples=17, seed=3))
    lines = (tmp_path / "s.txt").read_text().splitlines()
    assert len(lines) == 17 and noise == tm.config.langevin.sampling_noise()
    assert lines[:7] == tm.sample_chains(7, seed=3).sentences
    assert lines[7:14] == tm.sample_chains(7, seed=4).sentences
    corpus = load_corpus("demo")
    streamed = perplexities(SampleFile(tmp_path / "s.txt"), corpus, PPLConfig(order=3), progress=False)
    held = perplexities([s.split() for s in lines if s.split()], corpus, PPLConfig(order=3),
                        progress=False)
    assert (streamed["fppl"], streamed["rppl"], streamed["samples"]) == \
        (held["fppl"], held["rppl"], held["samples"])


def _tiny_run_and_small_corpus(tmp_path, monkeypatch, demo):
    """A 6-step demo run and a 300/60/60-sentence slice of demo as a folder corpus (LSTM judges
    that train in seconds), with an empty LM cache."""
    monkeypatch.setenv("TEXTEBM_CACHE", str(tmp_path / "cache"))
    run = tmp_path / "run"
    r = runner.invoke(app, ["train", "demo", "--out", str(run), *TINY])
    assert r.exit_code == 0, r.output
    folder = tmp_path / "small"
    folder.mkdir()
    for split, n in (("train", 300), ("valid", 60), ("test", 60)):
        (folder / f"{split}.txt").write_text("\n".join(" ".join(s) for s in demo.split(split)[:n]) + "\n")
    return run, folder


def test_both_judges_share_one_set_of_samples(tmp_path, monkeypatch, demo):
    # --lm ngram,lstm: one samples.txt, NLL and diagnostics, FPPL/RPPL under each judge; the
    # top level is the first judge's (as a one-judge eval.json), eval.md has a row per judge.
    import pipeline.evaluate as ev
    from corpora.registry import load_corpus
    run, folder = _tiny_run_and_small_corpus(tmp_path, monkeypatch, demo)
    cfg = ev.EvalConfig(num_samples=80, lm="ngram,lstm", lstm_epochs=1, nll_sentences=-1,
                        diag_sentences=0)
    res = ev.evaluate_run(load(run), load_corpus(str(folder)), run, cfg)
    assert set(res["by_lm"]) == {"ngram", "lstm"}
    assert set(res["seconds"]) == {"sampling", "ppl_ngram", "ppl_lstm"}  # no NLL, no diagnostics
    assert res["by_lm"]["lstm"]["lstm"]["max_epochs"] == 1
    assert {k: res[k] for k in ("fppl", "rppl", "lm")} == \
        {k: res["by_lm"]["ngram"][k] for k in ("fppl", "rppl", "lm")}
    single = ev.evaluate_run(load(run), load_corpus(str(folder)), run,
                             ev.EvalConfig(num_samples=80, nll_sentences=-1, diag_sentences=0))
    assert single["fppl"] == res["fppl"] and "by_lm" not in single   # same seed, same samples
    rows = (run / "eval.md").read_text()
    md = ev.table2_markdown("run", "demo", res)
    assert "| ngram |" in md and "| lstm |" in md and "| lstm |" not in rows
    with pytest.raises(ValueError, match="--lm"):
        ev.EvalConfig(lm="ngram,gpt").lms()
    # Checked before any part runs: the NLL's importance samples are shared out over 4 chains.
    with pytest.raises(ValueError, match="--nll-samples: importance samples must be a positive multiple of the 4"):
        ev.EvalConfig(nll_samples=5).check()
    ev.EvalConfig(nll_samples=5, parts="ppl").check()   # no NLL: no constraint


def test_parts_add_to_an_existing_evaluation_and_an_interruption_keeps_what_was_measured(
        tmp_path, monkeypatch):
    # eval.json is written after each part: an evaluation stopped in the NLL keeps its FPPL/RPPL.
    # --parts nll then adds the NLL (here over the whole test split) and keeps the rest as it was.
    import pipeline.evaluate as ev
    run = tmp_path / "run"
    r = runner.invoke(app, ["train", "demo", "--out", str(run), *TINY])
    assert r.exit_code == 0, r.output

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(ev, "importance_nll", interrupted)
    r = runner.invoke(app, ["evaluate", "--checkpoint", str(run), *EVAL])
    assert r.exit_code != 0
    first = json.loads((run / "eval.json").read_text())
    assert first["fppl"] > 1 and "nll" not in first and "latent" not in first
    assert set(first["seconds"]) == {"sampling", "ppl_ngram"}
    monkeypatch.undo()
    r = runner.invoke(app, ["evaluate", "--checkpoint", str(run), "--parts", "nll",
                            "--nll-sentences", "0", "--nll-samples", "4",
                            "--nll-temperatures", "5", "--logz-temperatures", "200", "--json"])
    assert r.exit_code == 0, r.output
    res = json.loads((run / "eval.json").read_text())
    from corpora.registry import load_corpus
    assert res["nll"]["of_test"] == "all"
    assert res["nll"]["sentences"] == len(load_corpus("demo").split("test"))
    assert {k: res[k] for k in ("fppl", "rppl", "samples")} == \
        {k: first[k] for k in ("fppl", "rppl", "samples")}
    assert set(res["seconds"]) == {"sampling", "ppl_ngram", "nll"} and "latent" not in res
    assert "| " in (run / "eval.md").read_text()
    r = runner.invoke(app, ["evaluate", "--checkpoint", str(run), "--parts", "ppl,gap"])
    assert r.exit_code == 2 and "--parts" in r.output


def test_paired_nll_known_values():
    import pipeline.evaluate as ev
    got = ev.paired_nll([10.0, 22.0, 31.0], [9.0, 20.0, 30.0])   # differences 1, 2, 1
    assert got["model_nll"] == pytest.approx(21.0) and got["judge_nll"] == pytest.approx(59 / 3)
    assert got["model_minus_judge"] == pytest.approx(4 / 3)
    assert got["model_minus_judge_se"] == pytest.approx((1 / 3) ** 0.5 / 3 ** 0.5)  # sd 0.577, n 3
    with pytest.raises(ValueError):
        ev.paired_nll([1.0, 2.0], [1.0])


def test_the_nll_part_scores_the_same_sentences_under_the_lstm_judge(tmp_path, monkeypatch, demo):
    # --parts nll with an LSTM judge: the judge's NLL of exactly the sentences the model's NLL
    # was estimated on (nll_sentences.json's test_index), paired, beside the model's.
    import pipeline.evaluate as ev
    from corpora.registry import load_corpus
    from lm_eval.lstm_lm import evaluate_ppl
    from lm_eval.perplexity import forward_lm
    run, folder = _tiny_run_and_small_corpus(tmp_path, monkeypatch, demo)
    corpus = load_corpus(str(folder))
    cfg = ev.EvalConfig(lm="lstm", lstm_epochs=1, parts="nll", nll_sentences=7, nll_samples=4,
                        nll_temperatures=3, logz_temperatures=100, diag_sentences=0)
    res = ev.evaluate_run(load(run), corpus, run, cfg)
    j = res["nll"]["judge_lstm"]
    per = json.loads((run / "nll_sentences.json").read_text())
    picked = [corpus.split("test")[i] for i in per["test_index"]]
    judge = forward_lm(corpus, ev._ppl_config("lstm", cfg))  # cached by the evaluation
    alone = evaluate_ppl(judge.model, picked, judge.vocab, "cpu")
    assert j["sentences"] == len(picked) == 7
    assert j["judge_nll"] == pytest.approx(alone["nll"] / 7, rel=1e-9)
    assert j["model_nll"] == pytest.approx(res["nll"]["nll"], rel=1e-9)
    assert j["model_minus_judge"] == pytest.approx(j["model_nll"] - j["judge_nll"], rel=1e-9)


def test_the_printed_table_is_whole_when_stdout_is_a_pipe(tmp_path, monkeypatch):
    # Piped (CliRunner's stdout is no terminal), the copy of eval.md that evaluate prints is the
    # file itself: rich wrapped it at 80 columns, breaking the table's rows across lines.
    import pipeline.evaluate as ev
    run = tmp_path / "run"
    r = runner.invoke(app, ["train", "demo", "--out", str(run), *TINY])
    assert r.exit_code == 0, r.output
    res = {"fppl": 1162.0412, "rppl": 286.5231, "real_fppl": 22.1017, "lm": "ngram", "samples": 60,
           "nll": None, "latent": {"gap_nats_tok": 0.0024, "mutual_info": 0.26,
                                   **{f"key_{i}": float(i) for i in range(30)}}}

    def evaluated(tm, corpus, run_dir, cfg, progress=None, log=None):
        (run_dir / "eval.md").write_text(ev.table2_markdown("a-run-name-" * 4, "demo", res))
        return res
    monkeypatch.setattr(ev, "evaluate_run", evaluated)
    r = runner.invoke(app, ["evaluate", "--checkpoint", str(run)])
    assert r.exit_code == 0, r.output
    md = (run / "eval.md").read_text()
    assert max(map(len, md.splitlines())) > 80 and md in r.stdout
    table = [ln for ln in r.stdout.splitlines() if ln.startswith("|")]
    assert len(table) == 3 and {ln.count("|") for ln in table} == {10}
    assert len([ln for ln in r.stdout.splitlines() if ln.startswith("latent: ")]) == 1
    assert "key_29 29" in next(ln for ln in r.stdout.splitlines() if ln.startswith("latent: "))
