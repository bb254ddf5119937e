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
    assert res["samples_generated"] == 60
    check_ppl_against_samples_file(run, res)
    # Samples come from the prior chain at the run's sampling noise (the default preset's).
    from textebm.config import SAMPLE_NOISE
    assert res["sample_noise"] == SAMPLE_NOISE
    check_latent_invariants(run, res["latent"], diag_sentences=30)
    check_eval_md_row(run, res)
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
    check = nll["grammar_check"]
    assert check["model_minus_exact"] == pytest.approx(nll["nll"] - check["exact_nll"], rel=1e-9)
    per = json.loads((run / "nll_sentences.json").read_text())
    assert per["test_index"] == pick and len(per["nll"]) == len(per["floor"]) == 12
    check_nll_summary_against_sentences(nll, per, samples=8)
    # The grammar's exact NLL of the same 12 sentences, computed here from the grammar.
    from corpora import demo
    exact = -demo.log_probs([test[i].split() if isinstance(test[i], str) else test[i]
                             for i in pick]).mean()
    assert check["exact_nll"] == pytest.approx(exact, rel=1e-9)


def check_ppl_against_samples_file(run, res):
    """FPPL and RPPL recomputed from samples.txt with the n-gram LM directly: the training split's
    5-gram on the samples, and the samples' 5-gram (the training vocabulary joined at zero counts)
    on the test split; the real-data FPPL is the first LM on the test split."""
    from corpora.registry import load_corpus
    from corpora.vocab import Vocab
    from lm_eval.ngram import NGramLM
    from lm_eval.perplexity import read_samples
    corpus = load_corpus("demo")
    samples = read_samples(run / "samples.txt")
    assert len(samples) == res["samples"] == 60 and res["order"] == 5
    fwd = NGramLM.train(corpus.train, order=5)
    assert res["fppl"] == pytest.approx(fwd.score(samples).ppl, rel=1e-9)
    assert res["real_fppl"] == pytest.approx(fwd.score(corpus.split("test")).ppl, rel=1e-9)
    rev = NGramLM.train(samples, order=5, vocab=Vocab.build(corpus.train).itos[4:])
    assert res["rppl"] == pytest.approx(rev.score(corpus.split("test")).ppl, rel=1e-9)


def check_latent_invariants(run, lat, diag_sentences):
    """The latent diagnostics against what they must satisfy: the gap is the difference of its
    two NLLs, I(x;z)'s bound is log N of the sentences read, the units and the topic probe's
    accuracy are counts and shares of their own sizes, and the grammar's checks of the samples
    agree with the grammar applied here to samples.txt."""
    import math
    import numpy as np
    from corpora import demo
    from lm_eval.perplexity import read_samples
    assert lat["gap_nats_tok"] == pytest.approx(lat["nll_tok_random_z"] - lat["nll_tok_posterior_z"],
                                                abs=1e-12)
    assert lat["sentences"] == diag_sentences
    assert lat["mutual_info_max"] == pytest.approx(math.log(diag_sentences), rel=1e-12)
    assert 0 <= lat["mutual_info"] <= lat["mutual_info_max"] + 1e-9
    assert isinstance(lat["active_units"], int) and 0 <= lat["active_units"] <= 32
    samples = read_samples(run / "samples.txt")
    lp = demo.log_probs(samples)
    assert lat["samples_scored"] == len(samples) == 60
    assert lat["impossible_share"] == pytest.approx(float(np.mean(~np.isfinite(lp))), abs=1e-12)
    ok = np.isfinite(lp)
    if ok.any():
        tokens = sum(len(s) + 1 for s, k in zip(samples, ok) if k)
        assert lat["samples_exact_nll_tok"] == pytest.approx(-lp[ok].sum() / tokens, rel=1e-9)
    else:
        assert math.isnan(lat["samples_exact_nll_tok"])
    assert 0 <= lat["posterior_impossible_share"] <= 1


def check_eval_md_row(run, res):
    """eval.md's row carries eval.json's numbers, in a table whose every line has 10 |."""
    lines = (run / "eval.md").read_text().splitlines()
    table = [ln for ln in lines if ln.startswith("|")]
    assert {ln.count("|") for ln in table} == {10}
    cells = [c.strip() for c in table[2].strip("|").split("|")]
    assert cells[0] == run.name and cells[1] == "demo"
    assert cells[2:5] == [f"{res['real_fppl']:.2f}", f"{res['fppl']:.2f}", f"{res['rppl']:.2f}"]
    nll = res.get("nll")
    assert cells[5] == (f"{nll['nll']:.2f} ± {nll['nll_se']:.2f}" if nll else "–")
    lat = res.get("latent")
    assert cells[6] == (f"{lat['gap_nats_tok']:.3f}" if lat else "–")
    assert cells[7:] == [res["lm"], f"{res['samples']:,}"]


def check_nll_summary_against_sentences(nll, per, samples):
    """The NLL's summary recomputed from nll_sentences.json: the mean, the floor check's count,
    and the importance weights' ESS (each in [1, samples], as (sum w)^2 / sum w^2 must be; the
    median is torch's lower median)."""
    import math
    n = len(per["nll"])
    assert nll["nll"] == pytest.approx(sum(per["nll"]) / n, rel=1e-12)
    sd = math.sqrt(sum((v - nll["nll"]) ** 2 for v in per["nll"]) / (n - 1))
    assert nll["nll_se"] == pytest.approx(sd / math.sqrt(n), rel=1e-9)
    assert nll["floor"]["checked"] == n
    assert nll["floor"]["violations"] == sum(v < f for v, f in zip(per["nll"], per["floor"]))
    ess = sorted(per["ess"])
    assert all(1 - 1e-9 <= e <= samples + 1e-9 for e in ess) and nll["ess"]["of"] == samples
    assert nll["ess"]["median"] == pytest.approx(ess[(n - 1) // 2], rel=1e-12)
    assert nll["ess"]["min"] == pytest.approx(ess[0], rel=1e-12)
    assert nll["ess"]["below_1_5"] == sum(e < 1.5 for e in ess)


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
    # eval.md is rewritten with the NLL that --parts nll added beside the kept FPPL/RPPL.
    check_eval_md_row(run, res)
    per = json.loads((run / "nll_sentences.json").read_text())
    check_nll_summary_against_sentences(res["nll"], per, samples=4)
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
