"""The latent study (issue: the latent must carry the sentence). One JSON line per setting.

    python -m studies.latent_study --corpus demo --settings paper,sri --priors ebm,gaussian
    python -m studies.latent_study --corpus ptb --max-steps 500 --settings paper,default

Each row trains a fresh model with one posterior/prior setting (everything else the corpus
defaults, same seed, same budget), then measures it with `textebm evaluate` (pipeline/evaluate.py,
no NLL; --samples prior samples at the run's sample noise or --sample-noise, diagnostics on
--eval-sentences test sentences): the gap (NLL/token at random z minus at a 200-step posterior
z), active units, I(x;z), 5-gram FPPL/RPPL; on demo also the topic probe, the share of samples the
grammar cannot emit and their exact NLL/token; plus paper Table 3's chain check and the wall time
of training. `--remeasure FILE` measures the rows of FILE again. Budget: the corpus default steps
(demo 1,500) or --max-steps; --threads torch threads per process (the docs/latent-study.md table: 1 thread, two
rows at once on a 2-core machine).

    python -m studies.latent_study --remeasure studies/results/latent_study_demo.jsonl
"""
from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import torch

from corpora.registry import load_corpus
from textebm.api import load
from pipeline.evaluate import EvalConfig, evaluate_run
from textebm import config as textebm_config
from textebm.config import parse_settings
from textebm.train import TrainSetup, train

# name -> (posterior preset, further overrides by config section)
SETTINGS: dict[str, tuple[str, dict]] = {
    "paper": ("paper", {}),
    "paper-persistent": ("paper", {"langevin": {"init1": "persistent"}}),
    "sri": ("sri", {}),
    "sri-noise1": ("sri", {"langevin": {"noise1": 1.0}}),
    "sri-encoder": ("sri", {"langevin": {"init1": "encoder"}}),
    "sri-persistent": ("sri", {"langevin": {"init1": "persistent"}}),
    "default": (None, {}),
}


def build_config(corpus: str, setting: str, prior: str, max_steps: int | None, extra: dict):
    preset, overrides = SETTINGS[setting]
    cfg = textebm_config.build_config(corpus, preset, overrides, extra)
    cfg.prior.kind = prior
    if max_steps:
        cfg.train.max_steps = max_steps
        cfg.train.eval_every = cfg.train.save_every = max_steps
    return cfg.validate()


def measure(run_dir: Path, corpus, n_samples: int, eval_sentences: int, seed: int = 0,
            noise: float | None = None, average: bool = True) -> dict:
    """`textebm evaluate` (no NLL) on the run, plus paper Table 3's chain check: the same 200
    chains decoded greedily at steps 0, 40, 100; how many change their sentence, and whether the
    energy profile has settled (mean E over steps 80-100 vs 60-80). `average`: read the run with
    its weight average where it kept one (train.ema), else with its last weights."""
    tm = load(run_dir, average=average)
    res = evaluate_run(tm, corpus, run_dir, EvalConfig(
        num_samples=n_samples, lm="ngram", order=5, nll_sentences=-1,
        diag_sentences=eval_sentences, noise=noise, seed=seed))
    out = {**res["latent"], "fppl5": res["fppl"], "rppl5": res["rppl"],
           "real_fppl5": res["real_fppl"], "samples": n_samples,
           "empty_samples": res["empty_samples"], "sample_noise": res["sample_noise"]}
    tr = tm.sample_chains(200, steps=100, decode="greedy", seed=seed, trace_at=(0, 40, 100),
                          profile=True)
    first, last = tr.trace[0].sentences, tr.trace[-1].sentences
    e = tr.profile.mean(1)
    out.update(trace_changed=sum(a != b for a, b in zip(first, last)) / len(first),
               energy_start=float(e[0]), energy_60=float(e[60]), energy_100=float(e[100]),
               energy_drift_80_100=float(e[80:].mean() - e[60:80].mean()))
    return out


COLUMNS = [("setting", "setting", "{}"), ("prior", "prior", "{}"), ("steps", "steps", "{}"),
           ("gap_nats_tok", "gap", "{:.3f}"), ("active_units", "AU", "{}"),
           ("mutual_info", "I(x;z)", "{:.2f}"), ("topic_probe_acc", "topic probe", "{:.1%}"),
           ("sample_noise", "sample noise", "{}"),
           ("impossible_share", "impossible", "{:.1%}"),
           ("samples_exact_nll_tok", "samples NLL/tok", "{:.3f}"),
           ("samples_vs_data", "vs data", "{:+.1%}"),  # against the grammar's entropy rate
           ("posterior_impossible_share", "impossible from posterior z", "{:.1%}"),
           ("posterior_samples_exact_nll_tok", "NLL/tok from posterior z", "{:.3f}"),
           ("fppl5", "FPPL-5", "{:.1f}"), ("rppl5", "RPPL-5", "{:.1f}"),
           ("trace_changed", "chains change 0→100", "{:.0%}"),
           ("train_seconds", "train s", "{:.0f}")]


def table(path: str) -> str:
    """A markdown table of the JSON lines in `path` (docs/latent-study.md's study table)."""
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    head = "| # | " + " | ".join(c[1] for c in COLUMNS) + " |\n|" + "---|" * (len(COLUMNS) + 1) + "\n"
    return head + "".join(f"| {i} | " + " | ".join(fmt.format(r[k]) if k in r else "–"
                                                   for k, _, fmt in COLUMNS) + " |\n"
                          for i, r in enumerate(rows, 1))


def remeasure(path: str, out_root: str, n_samples: int, eval_sentences: int, seed: int = 0,
              noise: float | None = None) -> None:
    """Measure every row of a JSONL file again from its run folder (training facts kept) and
    rewrite the file: after a change to the measurements, every row is measured the same way."""
    lines = []
    for line in Path(path).read_text().splitlines():
        row = json.loads(line)
        last = row["setting"].endswith("-last")  # a --last-weights row
        run_dir = Path(out_root) / row["corpus"] / f"{row['setting'].removesuffix('-last')}-{row['prior']}"
        corpus = load_corpus(row["corpus"], data_dir=row.get("data_dir"))
        row.update(measure(run_dir, corpus, n_samples, eval_sentences, seed, noise, average=not last))
        lines.append(json.dumps(row))
        print(lines[-1], flush=True)
    Path(path).write_text("".join(x + "\n" for x in lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpus", default="demo")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--settings", default="paper,sri,default", help=f"comma list of {list(SETTINGS)}")
    ap.add_argument("--priors", default="ebm,gaussian")
    ap.add_argument("--max-steps", type=int, default=None, help="budget (default: the corpus default)")
    ap.add_argument("--set", action="append", default=[], help="extra override SECTION.KEY=JSON")
    ap.add_argument("--tag", default="", help="suffix of the row name (with --set)")
    ap.add_argument("--samples", type=int, default=2000)
    ap.add_argument("--eval-sentences", type=int, default=300)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="runs/study")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sample-noise", type=float, default=None,
                    help="prior chain noise of the samples (default: each run's sample_noise0)")
    ap.add_argument("--measure-only", action="store_true", help="re-measure existing run folders")
    ap.add_argument("--last-weights", action="store_true", help="with --measure-only: read a run "
                    "that kept a weight average (train.ema) with its last weights; the row's "
                    "setting ends in -last")
    ap.add_argument("--table", default=None, help="print a markdown table of a JSONL file and exit")
    ap.add_argument("--remeasure", default=None, help="measure every row of a JSONL file again, in place")
    a = ap.parse_args()
    if a.last_weights and not a.measure_only:
        ap.error("--last-weights measures an existing run: use it with --measure-only")
    if a.remeasure:
        torch.set_num_threads(a.threads)
        remeasure(a.remeasure, a.out, a.samples, a.eval_sentences, a.seed, a.sample_noise)
        return
    if a.table:
        print(table(a.table), end="")
        return
    torch.set_num_threads(a.threads)
    extra = parse_settings(a.set)
    corpus = load_corpus(a.corpus, data_dir=a.data_dir)
    for setting in a.settings.split(","):
        for prior in a.priors.split(","):
            name = f"{setting}{a.tag}-{prior}"
            cfg = build_config(a.corpus, setting, prior, a.max_steps, extra)
            cfg.train.seed = a.seed
            run_dir = Path(a.out) / a.corpus / name
            if a.measure_only:
                summary = json.loads((run_dir / "summary.json").read_text())
                wall = summary["seconds"]
            else:
                t0 = time.time()
                summary = train(cfg, corpus, TrainSetup(run_dir, torch.device("cpu"), progress=False))
                wall = time.time() - t0
            row = {"corpus": a.corpus, "data_dir": a.data_dir, "prior": prior,
                   "setting": setting + a.tag + "-last" * a.last_weights,
                   "steps": summary["step"], "train_seconds": round(wall, 1),
                   "threads": a.threads,
                   "langevin": json.loads((run_dir / "config.json").read_text())["langevin"],
                   "overrides": extra}
            row.update(measure(run_dir, corpus, a.samples, a.eval_sentences, a.seed, a.sample_noise,
                               average=not a.last_weights))
            row["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
