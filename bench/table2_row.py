"""One row of paper Table 2 from a trained run folder, in one command; or the table from rows.

    python -m bench.table2_row runs/ptb/ebm-2h [--dest results/ptb/ebm-2h] [--precision auto]
        [--num-samples 10000] [--lm ngram,lstm] [--nll-sentences 0] [--lstm-epochs 30] [--decode greedy]
    python -m bench.table2_row runs/ptb/ebm-2h --parts nll --nll-sentences 0   # add one part
    python -m bench.table2_row --table results/ptb/ebm-2h results/ptb/gaussian-2h

A row: `textebm evaluate` (samples, FPPL/RPPL under each judge LM, importance-weighted NLL with
its standard errors, latent diagnostics) and `textebm sample --trace 0,40,100` (20 prior chains
decoded at those steps, and the energy profile along them), both through the CLI a user runs,
then the training curves. The destination folder gets what a reader needs and no weights:
config.json, summary.json, eval.json, eval.md, curves.png, energy_profile.png, trace.txt
(the 20 chains), samples_head.txt (the first 100 of the evaluation samples) and row.json (the
command, its settings and how long each part took). `--parts` passes to `textebm evaluate`: the
parts not named keep their results in eval.json, and row.json adds the new command to the old.

--table prints the rows in the layout of Table 2: real data (the paper's and under our judges),
the paper's row, then each folder under each judge, with the iterations, sentences and training
time each had, and the latent gap beside them.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from itertools import islice
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from pipeline.evaluate import PAPER_TABLE2, PARTS
from textebm.plots import plot_curves

KEPT = ("config.json", "summary.json", "eval.json", "eval.md")


def textebm(*args: str, threads: int = 0) -> float:
    """Run the textebm CLI (this checkout's) with args; returns its wall seconds."""
    env = dict(os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {}))
    t = time.time()
    subprocess.run([sys.executable, "-m", "cli", *args], check=True, env=env)
    return time.time() - t


def make_row(a: argparse.Namespace) -> Path:
    run = Path(a.run)
    if not (run / "checkpoint.pt").is_file():
        sys.exit(f"{run} is not a run folder (no checkpoint.pt)")
    corpus = json.loads((run / "config.json").read_text())["train"]["corpus"]
    dest = Path(a.dest or ROOT / "results" / corpus / run.name)
    dest.mkdir(parents=True, exist_ok=True)
    common = ["--checkpoint", str(run), "--precision", a.precision, "--device", a.device]
    data = ["--data-dir", a.data_dir] if a.data_dir else []
    ev = ["evaluate", *common, *data, "--num-samples", str(a.num_samples), "--lm", a.lm,
          "--set", f"eval.lstm_epochs={a.lstm_epochs}", "--nll-sentences", str(a.nll_sentences),
          "--set", f"eval.nll_samples={a.nll_samples}", "--diag-sentences", str(a.diag_sentences),
          "--seed", str(a.seed), "--parts", a.parts, "--decode", a.decode]
    smp = ["sample", *common, "-n", "20", "--trace", "0,40,100", "--seed", str(a.seed),
           "--out", str(dest / "trace.txt"), "--plot", str(dest / "energy_profile.png")]
    seconds = {"evaluate": textebm(*ev, threads=a.threads), "trace": textebm(*smp, threads=a.threads)}
    plot_curves(run / "metrics.jsonl", dest / "curves.png")
    for name in KEPT:
        if (run / name).is_file():
            shutil.copy(run / name, dest / name)
    # Committed rows name no machine path: the run as given here, paths in the checkout relative.
    if (dest / "summary.json").is_file():
        summary = json.loads((dest / "summary.json").read_text())
        summary["run_dir"] = str(run)
        (dest / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    ev, smp = ([arg.replace(f"{ROOT}/", "") for arg in cmd] for cmd in (ev, smp))
    with open(run / "samples.txt", encoding="utf-8") as f:
        (dest / "samples_head.txt").write_text("".join(islice(f, 100)), encoding="utf-8")
    row = {"run": str(run), "commands": [["textebm", *ev], ["textebm", *smp]], "threads": a.threads,
           "seconds": seconds}
    some = {p.strip() for p in a.parts.split(",")} != set(PARTS)
    if some and (dest / "row.json").is_file():  # a part added to an earlier row
        old = json.loads((dest / "row.json").read_text())
        row = {**old, "commands": old["commands"] + row["commands"],
               "seconds": {**old["seconds"], **{f"{k} ({a.parts})": v for k, v in seconds.items()}}}
    (dest / "row.json").write_text(json.dumps(row, indent=2) + "\n")
    print(table([dest]))
    return dest


def _fmt(v, spec: str = ".2f") -> str:
    return "–" if v is None else format(v, spec)


def _corpus(d: Path, cfg: dict) -> str:
    """The corpus a row belongs to: the run's named corpus, or for a run on a text file (SNLI's
    test file split 18/1/1, say) the corpus its result folder is filed under (results/snli/...)."""
    name = cfg["train"]["corpus"]
    return d.parent.name if name not in PAPER_TABLE2 and d.parent.name in PAPER_TABLE2 else name


def table(folders: list[Path]) -> str:
    """Markdown in the layout of paper Table 2, one block per corpus (in the order given): real
    data (the paper's, then under each of our judges), the paper's row, then one row per folder
    and judge LM, with the budget each run had."""
    head = ("| model | judge LM | FPPL | RPPL | NLL (± SE) | latent gap (nats/token) | "
            "iterations | sentences seen | training time |\n|---|---|---|---|---|---|---|---|---|\n")
    blocks: dict[str, dict] = {}
    for d in map(Path, folders):
        ev = json.loads((d / "eval.json").read_text())
        cfg = json.loads((d / "config.json").read_text())
        summ = json.loads((d / "summary.json").read_text()) if (d / "summary.json").is_file() else {}
        block = blocks.setdefault(_corpus(d, cfg), {"real": {}, "runs": []})
        nll = ev.get("nll")
        nll_s = f"{nll['nll']:.2f} ± {nll['nll_se']:.2f}" if nll else "–"
        if nll and nll.get("of_test", "all") != "all":
            nll_s += f" ({nll['of_test'].split(' (')[0]})"
        gap = _fmt(ev.get("latent", {}).get("gap_nats_tok"), ".3f")
        secs = summ.get("train_seconds")
        budget = (f"{_fmt(summ.get('step'), ',')} | {_fmt(summ.get('sentences_seen'), ',')} | "
                  f"{'–' if secs is None else f'{secs / 3600:.2f} h'}")
        for lm, r in ev.get("by_lm", {ev["lm"]: ev}).items():
            block["real"].setdefault(lm, r["real_fppl"])  # the same judge on the same test split
            block["runs"].append(f"| ours, {cfg['prior']['kind']} prior ({d.name}) | {lm} | "
                                 f"{r['fppl']:.2f} | {r['rppl']:.2f} | {nll_s} | {gap} | {budget} |\n")
    rows = []
    for c, block in blocks.items():
        p = PAPER_TABLE2.get(c)
        if p:
            rows.append(f"| real data, {c} (paper) | ? | {p[0]} | – | – | – | – | – | – |\n")
        rows += [f"| real data, {c} (ours) | {lm} | {v:.2f} | – | – | – | – | – | – |\n"
                 for lm, v in block["real"].items()]
        if p:
            rows.append(f"| paper: latent EBM prior, {c} (Pang et al. 2020) | ? | {p[1]} | {p[2]} | "
                        f"{p[3]} | not reported | ~40,000 | – | – |\n")
        rows += block["runs"]
    return head + "".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", nargs="?", help="run folder to evaluate")
    ap.add_argument("--table", nargs="+", metavar="DIR", help="print Table 2 from these result folders")
    ap.add_argument("--dest", help="result folder (default results/CORPUS/RUN_NAME)")
    ap.add_argument("--data-dir", help="folder with ptb/, yahoo/, snli/ (default: $TEXTEBM_DATA)")
    ap.add_argument("--num-samples", type=int, default=10000)
    ap.add_argument("--lm", default="ngram,lstm")
    ap.add_argument("--lstm-epochs", type=int, default=30)
    ap.add_argument("--nll-sentences", type=int, default=0, help="0: the whole test split")
    ap.add_argument("--nll-samples", type=int, default=20)
    ap.add_argument("--diag-sentences", type=int, default=500)
    ap.add_argument("--decode", default="sample", help="sample (ancestral) or greedy decoding of the samples")
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    ap.add_argument("--parts", default=",".join(PARTS), help="evaluate these parts only (ppl, nll, latent); "
                    "the others keep their results")
    a = ap.parse_args()
    if a.table:
        print(table([Path(d) for d in a.table]), end="")
    elif a.run:
        make_row(a)
    else:
        ap.error("give a run folder, or --table with result folders")


if __name__ == "__main__":
    main()
