"""The coherent-model levers on demo (docs/coherence.md): train each setting, evaluate it, and
print one JSON line per run with the prior's coherence and the samples' quality.

    python -m studies.coherence_levers --settings encoder,gp1,gaussian --seeds 0,1,2 --out runs/coherence
    python -m studies.coherence_levers --settings gp1 --seeds 0 --out runs/coherence --no-train
    python -m studies.coherence_levers --settings encoder,gp1 --seeds 0 --max-steps 3000

A setting is a recipe's name (`encoder`: the default recipe when this study began, which its
first rows call `default`, a name still read as `encoder`; `gaussian`: the fair Gaussian
baseline; `coherent`: the default since) or
the name of a TOML file in studies/coherence_levers/ (`[langevin]`, `[train]`, `[prior]` sections
on top of the `encoder` recipe). Per run, the budget is the demo default
(1,500 iterations, or --max-steps, one thread) and then
    textebm evaluate --parts ppl,latent --num-samples 2000 --diag-sentences 300
(5-gram judges; coherence: 2,000 prior samples, 1,000 descents, AIS at 10,000 temperatures).
A run folder whose eval.json holds the latent part is read, not trained again; `--no-train` only reads.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from common.storage import read_json
from textebm.config import setting_flags

HERE = Path(__file__).resolve().parent / "coherence_levers"
KEEP = ("gap_nats_tok", "impossible_share", "samples_vs_data", "topic_probe_acc",
        "energy_codes_mean", "energy_codes_p01", "energy_samples_mean", "energy_samples_minus_codes",
        "descent_energy_min", "descent_below_codes_p01", "log_z_ais", "log_z_plain_mc",
        "log_z_ais_minus_plain")


def train_args(setting: str) -> list[str]:
    try:
        return setting_flags(setting, HERE)
    except ValueError as e:
        sys.exit(str(e))


def cli(*args: str) -> None:
    # One thread for evaluate too (train takes --threads 1): runs go side by side on a few cores,
    # and two evaluations of two threads each on 2 cores were still running after 15 minutes,
    # where one thread each took about 3.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "cli", *args], check=True, env=env)


def row(setting: str, seed: int, run: Path) -> dict:
    ev, summary = read_json(run / "eval.json"), read_json(run / "summary.json")
    lat = ev.get("latent", {})
    return {"study": "coherence_levers", "setting": setting, "seed": seed, "run": str(run),
            "iterations": summary.get("step"), "train_seconds": summary.get("train_seconds"), "fppl": ev.get("fppl"),
            "rppl": ev.get("rppl"), **{k: lat.get(k) for k in KEEP}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--settings", default="encoder,gaussian,gp1")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--out", default="runs/coherence", help="where the run folders go")
    ap.add_argument("--no-train", action="store_true", help="only read the runs already there")
    ap.add_argument("--max-steps", type=int, default=0, help="iterations (0: the demo default, "
                    "1,500); other lengths go to folders named SETTING-itN-sSEED")
    a = ap.parse_args()
    for setting in a.settings.split(","):
        for seed in (int(s) for s in a.seeds.split(",")):
            # `encoder`'s folders are s0, s1, ... (results/demo/s0 is the README's demo run, from
            # when `encoder` was the default and its rows said `default`).
            name = setting + (f"-it{a.max_steps}" if a.max_steps else "")
            run = Path(a.out) / (f"s{seed}" if name in ("encoder", "default") else f"{name}-s{seed}")
            # evaluate writes eval.json after each part: one without "latent" was interrupted.
            if "latent" not in read_json(run / "eval.json"):
                if a.no_train:
                    continue
                if not (run / "summary.json").exists():
                    steps = ["--max-steps", str(a.max_steps)] if a.max_steps else []
                    cli("train", "demo", *train_args(setting), *steps, "--seed", str(seed),
                        "--out", str(run), "--threads", "1", "--quiet")
                cli("evaluate", "--checkpoint", str(run), "--parts", "ppl,latent",
                    "--num-samples", "2000", "--diag-sentences", "300", "--json")
            print(json.dumps(row(setting, seed, run)), flush=True)


if __name__ == "__main__":
    main()
