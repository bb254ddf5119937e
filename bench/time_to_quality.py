"""Time to quality on the full PTB training split: training recipes side by side at one budget.

    python -m bench.time_to_quality --data-dir ../shared/data --settings encoder,pretrain \
        --budget 120 --every 20 --out runs/ttq

A setting is a recipe's name (`encoder`: the default recipe when the first rows were measured,
which call it `default`, a name still read as `encoder`; `coherent`, the default since) or the
name of a TOML file in bench/time_to_quality/ (sections on top of the `encoder` recipe), with an
optional `:bf16` or `:fp32` tail for its precision (`pretrained:bf16`). Every setting trains in its own
process on one thread, all at once (one core each, so they share the machine's conditions), in
chunks: `textebm train ptb --time-budget P` and then `--resume` to P = every, 2 x every, ...,
budget minutes of training (the run's own clock, summed over resumes; validation is off, so the
clock counts training alone). After each chunk the process measures a point:
- val_nll_tok, val_gap: NLL/token of 300 validation sentences at z from the run's posterior
  chain, and the latent gap (the same at z ~ N(0, I) minus it), as the trainer logs them;
- fppl5, rppl5: FPPL and RPPL of --samples prior samples under the 5-gram judges
  (`textebm evaluate --parts ppl --lm ngram`).
One JSON line per point (with the CPU's name: times from different CPUs are not compared),
printed and kept in RUN/ttq.jsonl. A point already there is not measured
again and a run resumes where it stopped, so an interrupted bench continues with the same command.
At the end every run's points go to --results, with a plot (.png) and a table (.md) beside it.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from common.precision import cpu_name
from textebm.config import setting_flags

HERE = Path(__file__).resolve().parent / "time_to_quality"
VALID_SENTENCES = 300


def train_args(setting: str) -> list[str]:
    try:
        return setting_flags(setting, HERE)
    except ValueError as e:
        sys.exit(str(e))


def run_dir(a, setting: str) -> Path:
    return Path(a.out) / f"{setting.replace(':', '-')}-s{a.seed}"


def points(run: Path) -> list[dict]:
    f = run / "ttq.jsonl"
    return [json.loads(l) for l in f.read_text().splitlines() if l.strip()] if f.exists() else []


def measure(run: Path, setting: str, minutes: float, a) -> dict:
    """One point of a trained chunk: the validation NLL and gap, FPPL and RPPL (5-gram)."""
    import torch
    from corpora.registry import load_corpus
    from pipeline.evaluate import EvalConfig, evaluate_run
    from textebm import load
    from textebm.diagnostics import latent_use
    t0 = time.time()
    tm = load(run)
    cfg = tm.config.train
    corpus = load_corpus("ptb", a.data_dir, max_len=cfg.max_len, on_long=cfg.on_long)
    valid = tm.encode(corpus.split("valid")[:VALID_SENTENCES]).ids
    d = latent_use(tm.model, valid, a.seed + 1, chains=4, gap_steps=None, chain_sentences=100)
    ev = evaluate_run(tm, corpus, run, EvalConfig(num_samples=a.samples, parts="ppl", lm="ngram",
                                                  seed=a.seed))
    summary = json.loads((run / "summary.json").read_text())
    with open(run / "samples.txt", encoding="utf-8") as f:
        shown = [next(f).strip() for _ in range(3)]
    return {"bench": "time_to_quality", "setting": setting, "seed": a.seed, "budget_min": minutes,
            "train_minutes": round(summary["train_seconds"] / 60, 2), "step": summary["step"],
            "threads": torch.get_num_threads(), "precision": cfg.precision_used, "cpu": cpu_name(),
            "val_nll_tok": d["nll_tok_posterior_z"], "val_gap": d["gap_nats_tok"],
            "active_units": d["active_units"], "fppl5": ev["fppl"], "rppl5": ev["rppl"],
            "real_fppl5": ev["real_fppl"], "samples": ev["samples"],
            "measure_seconds": round(time.time() - t0, 1), "samples_head": shown}


def worker(setting: str, a) -> None:
    """Train `setting` chunk by chunk to a.budget minutes, measuring a point after each chunk."""
    run = run_dir(a, setting)
    done = {p["budget_min"] for p in points(run)}
    minutes = a.every
    while minutes <= a.budget + 1e-9:
        if minutes not in done:
            args = ["train", "ptb", "--time-budget", str(minutes), "--threads", "1", "--quiet"]
            if (run / "checkpoint.pt").exists():
                args += ["--resume", str(run)]  # a resume keeps the run's recorded settings
            else:
                # A checkpoint every 100 iterations (75 s of pretraining, 10 minutes of Algorithm
                # 1 on one thread), so a killed chunk loses at most that, not the chunk.
                args += [*train_args(setting), "--set", "train.eval_every=0", "--set", "train.save_every=100",
                         "--seed", str(a.seed), "--out", str(run)]
            if a.data_dir:
                args += ["--data-dir", a.data_dir]
            subprocess.run([sys.executable, "-m", "cli", *args], check=True)
            row = measure(run, setting, minutes, a)
            with open(run / "ttq.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")
            print(json.dumps(row), flush=True)
        minutes += a.every


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    keys = [("val_nll_tok", "validation NLL/token at posterior z"), ("val_gap", "latent gap (nats/token)"),
            ("fppl5", "FPPL (5-gram)"), ("rppl5", "RPPL (5-gram)")]
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6))
    for ax, (k, title) in zip(axes, keys):
        for setting in dict.fromkeys(r["setting"] for r in rows):
            pts = sorted((r["train_minutes"], r[k]) for r in rows if r["setting"] == setting)
            ax.plot(*zip(*pts), marker="o", label=setting)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("training minutes (one thread)")
        if k.endswith("ppl5"):
            ax.set_yscale("log")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def table(rows: list[dict]) -> str:
    """The points as a markdown table, setting by setting."""
    out = ["| setting | budget (min) | iterations | val NLL/token | latent gap | FPPL (5-gram) | RPPL (5-gram) |",
           "|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['setting']} | {r['budget_min']:g} | {r['step']:,} | {r['val_nll_tok']:.3f} | "
                   f"{r['val_gap']:.2f} | {r['fppl5']:.1f} | {r['rppl5']:.1f} |")
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=os.environ.get("TEXTEBM_DATA"),
                    help="folder with ptb/ (default: $TEXTEBM_DATA)")
    ap.add_argument("--settings", default="encoder,pretrain")
    ap.add_argument("--budget", type=float, default=120, help="training minutes per setting")
    ap.add_argument("--every", type=float, default=20, help="minutes of training between points")
    ap.add_argument("--samples", type=int, default=2000, help="prior samples per point")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="runs/ttq", help="where the run folders go")
    ap.add_argument("--results", default="bench/results/time_to_quality_ptb_full.jsonl")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        return worker(a.worker, a)
    settings = [s.strip() for s in a.settings.split(",") if s.strip()]
    for s in settings:
        train_args(s)  # an unknown setting stops here, before anything runs
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-m", "bench.time_to_quality", "--worker", s,
                               *sys.argv[1:]], env=env) for s in settings]
    codes = [p.wait() for p in procs]
    rows = [r for s in settings for r in points(run_dir(a, s))]
    if rows:
        Path(a.results).parent.mkdir(parents=True, exist_ok=True)
        Path(a.results).write_text("".join(json.dumps(r) + "\n" for r in rows))
        plot(rows, Path(a.results).with_suffix(".png"))
        Path(a.results).with_suffix(".md").write_text(table(rows))
    if any(codes):
        sys.exit(f"a setting failed (exit codes {codes}); rerun the same command to continue")


if __name__ == "__main__":
    main()
