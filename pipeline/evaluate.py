"""The paper's Table 2 pipeline for one run folder, plus the latent diagnostics.

    samples (prior chain, K0 steps; ancestral or greedy decoding) -> samples.txt
    FPPL / RPPL of the samples (lm_eval.perplexity) under each judge asked for: n-gram, LSTM LM
    importance-weighted NLL of the test split or a seeded random subset of it (textebm.nll),
    through the run's own tokenizer
    latent diagnostics (textebm.diagnostics): gap, active units, I(x;z); on demo also the topic
    probe, the share of samples the grammar cannot emit and their exact NLL/token
-> eval.json, eval.md (a row in the layout of Table 2 beside the paper's numbers).

eval.json is rewritten after each part, so an interrupted evaluation keeps what it measured, and
the NLL keeps its own progress (nll.progress.pt) so that a rerun resumes it. `parts` runs some
parts only: the others' results are kept from the eval.json already there (e.g. the whole-test
NLL added to an evaluation that used a random subset).
"""
from __future__ import annotations

import json
import random
import time
from pathlib import Path


from textebm.ais import AISConfig
from textebm.nll import importance_nll, paired_difference
from lm_eval.lstm_lm import LSTMLMConfig, sentence_nll
from lm_eval.perplexity import PPLConfig, SampleFile, forward_lm, perplexities
from pipeline import demo_checks
from pipeline.eval_config import PARTS, EvalConfig
from textebm import diagnostics
from textebm.api import TextEBM
from textebm.checkpoint import write_json

# Paper Table 2 ("ours" rows and the real-data FPPL): real FPPL, FPPL, RPPL, NLL.
PAPER_TABLE2 = {"snli": (23.53, 27.81, 31.96, 28.90), "ptb": (100.36, 107.45, 181.54, 91.35),
                "yahoo": (60.04, 80.91, 118.08, 321.18)}


SAMPLE_CHUNK = 10_000  # samples generated, written to samples.txt and dropped at a time
NLL_PROGRESS = "nll.progress.pt"
AGGREGATE_FIT = 5000   # training sentences whose codes the ex-post Gaussian is fitted to


def nll_subset(n_test: int, n: int, seed: int) -> list[int]:
    """Indices of the test sentences the NLL is estimated on: all of them (n = 0 or n >= n_test),
    else a random n (seeded, in test order), so that the over-sentences standard error holds
    (the first n sentences would be a few articles)."""
    if n <= 0 or n >= n_test:
        return list(range(n_test))
    return sorted(random.Random(seed).sample(range(n_test), n))


def write_samples(tm: TextEBM, path: Path, cfg: EvalConfig, progress=None) -> float:
    """Draw cfg.num_samples prior samples into `path`, one sentence per line, SAMPLE_CHUNK at a
    time: each chunk is written and dropped, so memory does not grow with the count. Chunk i
    uses seed cfg.seed + i (the first chunk is what one `sample_chains` call with cfg.seed
    gives). Returns the prior chain's noise scale."""
    tick = progress("sampling", cfg.num_samples) if progress else None
    noise = None
    with open(path, "w", encoding="utf-8") as f:
        for i, start in enumerate(range(0, cfg.num_samples, SAMPLE_CHUNK)):
            n = min(SAMPLE_CHUNK, cfg.num_samples - start)
            s = tm.sample_chains(n, decode=cfg.decode, seed=cfg.seed + i, noise=cfg.noise,
                                 sampler=cfg.sampler)
            f.writelines(x + "\n" for x in s.sentences)
            noise = s.noise
            if tick:
                tick(n)
    return noise


def evaluate_run(tm: TextEBM, corpus, run_dir: Path, cfg: EvalConfig = EvalConfig(),
                 progress=None, log=lambda msg: None) -> dict:
    """Everything Table 2 needs for the loaded run `tm` on `corpus` (or the parts cfg.parts
    names); writes eval.json (after each part), eval.md and samples.txt into run_dir and returns
    the eval.json dict. `progress(task, total)` returns a per-item callback (or None)."""
    lms, parts = cfg.lms(), cfg.part_list()
    res = _kept(run_dir / "eval.json", parts)
    seconds, clock = res.setdefault("seconds", {}), time.time()

    def done(name: str) -> None:  # wall seconds of each part, then eval.json as it stands
        nonlocal clock
        seconds[name], clock = round(time.time() - clock, 1), time.time()
        write_json(run_dir / "eval.json", res)

    res.update(precision=tm.precision, weights=tm.weights, run=str(run_dir), seed=cfg.seed,
               posterior=tm.config.to_dict()["langevin"])
    test = corpus.split("test")
    read = corpus.stats.get("test")
    if read is not None:
        # The test split is read with the run's own max_len / on_long; say what that left out.
        res["test_read"] = read.as_dict()
        if read.long_dropped:
            log(f"note: {read.long_dropped} test sentences longer than {corpus.max_len} tokens "
                f"were dropped (the run's max_len; on_long={corpus.on_long})")
    if cfg.sampler == "aggregate" and ("ppl" in parts or not (run_dir / "samples.txt").exists()):
        # The ex-post Gaussian: fitted to the codes of (up to) AGGREGATE_FIT training sentences.
        log("fitting a Gaussian to the aggregate posterior")
        res["aggregate_fit"] = tm.fit_aggregate(corpus.train[:AGGREGATE_FIT], cfg.seed)
    if "ppl" in parts:
        log(f"sampling {cfg.num_samples:,} sentences ({cfg.decode}, {tm.config.langevin.sampling_steps()} prior steps)")
        noise = write_samples(tm, run_dir / "samples.txt", cfg, progress)
        done("sampling")
        sampler = cfg.sampler or tm.config.langevin.prior_sampler
        samples = SampleFile(run_dir / "samples.txt")
        res.update(decode=cfg.decode, sample_noise=noise, samples_generated=cfg.num_samples,
                   sampler=sampler)
        by_lm = {}
        for lm in lms:
            log(f"FPPL / RPPL under the {lm} judges")
            by_lm[lm] = perplexities(samples, corpus, _ppl_config(lm, cfg), tm.device,
                                     progress=progress is not None)
            if lm == lms[0]:  # the first judge's numbers at the top level, as with one
                res.update(by_lm[lm], empty_samples=cfg.num_samples - by_lm[lm]["samples"])
            if len(lms) > 1:
                res["by_lm"] = by_lm
            done(f"ppl_{lm}")
    if "nll" in parts and cfg.nll_sentences >= 0:
        pick = nll_subset(len(test), cfg.nll_sentences, cfg.seed)
        picked = [test[i] for i in pick]
        ids = tm.encode(picked).ids  # the run's tokenizer: words, or spm pieces
        tick = progress("importance-weighted NLL", len(ids)) if progress else None
        nll_cfg = cfg.nll_config()
        log(f"log Z by AIS ({cfg.logz_temperatures:,} temperatures), then the NLL of "
            f"{len(ids):,} test sentences")
        res["nll"] = importance_nll(tm.model, ids, nll_cfg, progress=tick,
                                    state_path=run_dir / NLL_PROGRESS)
        per = res["nll"].pop("per_sentence")
        res["nll"]["of_test"] = ("all" if len(pick) == len(test) else
                                 f"random {len(pick)} of {len(test)} (seed {cfg.seed})")
        if tm.config.train.corpus == "demo":   # a cross-entropy cannot beat the data's entropy
            res["nll"]["grammar_check"] = demo_checks.exact_check(per["nll"], picked)
        if "lstm" in lms:  # the forward LSTM judge on the same sentences, paired
            log("the forward LSTM judge's NLL of the same sentences")
            judge = forward_lm(corpus, _ppl_config("lstm", cfg), tm.device, progress=progress is not None)
            per["judge_lstm_nll"] = sentence_nll(judge.model, picked, judge.vocab, tm.device).tolist()
            res["nll"]["judge_lstm"] = paired_nll(per["nll"], per["judge_lstm_nll"])
        write_json(run_dir / "nll_sentences.json", {"test_index": pick, **per})
        res["nll"]["precision"] = tm.precision  # it may be added later than the other parts
        done("nll")
    if "latent" in parts and cfg.diag_sentences:
        log("latent diagnostics")
        ids = tm.encode(test[:cfg.diag_sentences]).ids
        res["latent"] = diagnostics.latent_use(tm.model, ids, cfg.seed)
        coherence = diagnostics.CoherenceConfig(
            ais=AISConfig(temperatures=cfg.coherence_temperatures, seed=cfg.seed))
        # The NLL's log Z (40,000 temperatures) serves here too, where this evaluation has one.
        known = (res.get("nll") or {}).get("log_z_estimate")
        res["latent"].update(diagnostics.prior_coherence(tm.model, ids, cfg.seed, coherence,
                                                         log_z=known))
        if tm.config.train.corpus == "demo":
            if not (run_dir / "samples.txt").exists():
                write_samples(tm, run_dir / "samples.txt", cfg, progress)
            res["latent"].update(demo_checks.demo_report(
                tm.model, tm.vocab, list(SampleFile(run_dir / "samples.txt")), cfg.seed))
        done("latent")
    write_json(run_dir / "eval.json", res)
    if "fppl" in res:
        (run_dir / "eval.md").write_text(table2_markdown(run_dir.name, tm.config.train.corpus, res))
    return res


def _ppl_config(lm: str, cfg: EvalConfig) -> PPLConfig:
    return PPLConfig(lm=lm, order=cfg.order,
                     lstm=LSTMLMConfig(precision=cfg.precision, max_epochs=cfg.lstm_epochs))


def paired_nll(model_nll: list[float], judge_nll: list[float]) -> dict:
    """The model's NLL against a judge LM's on the same sentences (nats per sentence): both means
    and the paired difference with its standard error (textebm.nll.paired_difference), which can
    say which is lower on a subset where the means' own errors overlap."""
    n = len(model_nll)
    if n != len(judge_nll) or n < 2:
        raise ValueError("paired_nll needs two equally long lists of at least 2 sentences")
    diff, se = paired_difference(model_nll, judge_nll)
    return {"judge_nll": sum(judge_nll) / n, "model_nll": sum(model_nll) / n,
            "model_minus_judge": diff, "model_minus_judge_se": se, "sentences": n}


def _kept(path: Path, parts: list[str]) -> dict:
    """What an existing eval.json holds for the parts not being run (nothing when all are)."""
    if set(parts) == set(PARTS) or not path.exists():
        return {}
    old = json.loads(path.read_text())
    ppl_keys = {"fppl", "rppl", "real_fppl", "lm", "order", "lstm", "heldout", "samples", "tokens",
                "oov", "corpus", "by_lm", "decode", "sample_noise", "samples_generated", "sampler",
                "aggregate_fit",
                "empty_samples"}
    drop = {"ppl": ppl_keys, "nll": {"nll"}, "latent": {"latent"}}
    seconds_of = {"ppl": ("sampling", "ppl_"), "nll": ("nll",), "latent": ("latent",)}
    for part in parts:
        for k in drop[part]:
            old.pop(k, None)
        old["seconds"] = {k: v for k, v in old.get("seconds", {}).items()
                          if not k.startswith(seconds_of[part])}
    return old


def table2_markdown(name: str, corpus: str, res: dict) -> str:
    """Rows in the layout of paper Table 2: one per judge LM, then the paper's."""
    nll = f"{res['nll']['nll']:.2f} ± {res['nll']['nll_se']:.2f}" if res.get("nll") else "–"
    gap = f"{res['latent']['gap_nats_tok']:.3f}" if res.get("latent") else "–"
    head = ("| model | corpus | real-data FPPL | FPPL | RPPL | NLL | latent gap (nats/token) | LM | "
            "samples |\n|---|---|---|---|---|---|---|---|---|\n")
    row = "".join(f"| {name} | {corpus} | {r['real_fppl']:.2f} | {r['fppl']:.2f} | {r['rppl']:.2f} | "
                  f"{nll} | {gap} | {r['lm']} | {r['samples']:,} |\n"
                  for r in res.get("by_lm", {res["lm"]: res}).values())
    paper = PAPER_TABLE2.get(corpus)
    if paper:
        row += (f"| paper (Pang et al. 2020) | {corpus} | {paper[0]} | {paper[1]} | {paper[2]} | "
                f"{paper[3]} | not reported | ? | ? |\n")
    j = (res.get("nll") or {}).get("judge_lstm")
    if j:
        row += (f"\nNLL of the same {j['sentences']:,} test sentences (nats per sentence): this model "
                f"{j['model_nll']:.2f}, the forward LSTM judge {j['judge_nll']:.2f}; model minus judge "
                f"{j['model_minus_judge']:+.2f} ± {j['model_minus_judge_se']:.2f}.\n")
    return head + row
