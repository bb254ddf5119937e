"""How an evaluated NLL and its checks move when log Z(alpha) is estimated with more AIS
temperatures. log Z enters every sentence's log p(x) as the same additive constant (the AIS
chains for p(x) do not depend on it), so the per-sentence NLLs of a finished `textebm evaluate`
shift exactly by the change in log Z: no re-estimation is needed. One JSON line per run.

    python -m bench.logz_sensitivity runs/demo/s0 [RUN ...] [--temperatures 40000]
        [--from bench/results/partition_demo.jsonl]

`--from`: bench.partition lines to take log Z from (same run and temperatures) instead of
running AIS again. Reads RUN/eval.json (nll) and RUN/nll_sentences.json.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from textebm.ais import AISConfig, ais_log_z
from textebm.api import load


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--temperatures", type=int, default=40000)
    ap.add_argument("--from", dest="src", action="append", default=[])
    a = ap.parse_args()
    known = {}
    for f in a.src:
        for line in Path(f).read_text().splitlines():
            d = json.loads(line)
            if d.get("estimator") == "ais" and d.get("temperatures") == a.temperatures:
                known[str(Path(d["run"]))] = d
    for run in a.runs:
        nll = json.loads((Path(run) / "eval.json").read_text())["nll"]
        per = json.loads((Path(run) / "nll_sentences.json").read_text())
        new = known.get(str(Path(run)))
        if new is None:
            m = load(run).model
            new = ais_log_z(m.energy, m.latent_dim, AISConfig(temperatures=a.temperatures))
        shift = new["log_z"] - nll["log_z"]
        old_nll, floor = np.array(per["nll"]), np.array(per["floor"])
        new_nll = old_nll + shift
        line = {"run": run, "log_z_evaluated": nll["log_z"],
                "temperatures_evaluated": nll["log_z_estimate"].get("temperatures"),
                "log_z": new["log_z"], "temperatures": a.temperatures, "spread": new["spread"],
                "ais_ess": new["ess"], "shift": shift,
                "nll_evaluated": float(old_nll.mean()), "nll": float(new_nll.mean()),
                "floor_violations_evaluated": int((old_nll < floor).sum()),
                "floor_violations": int((new_nll < floor).sum()),
                "min_margin": float((new_nll - floor).min()), "sentences": len(new_nll)}
        check = nll.get("grammar_check")
        if check:
            line["model_minus_exact"] = check["model_minus_exact"] + shift
            line["model_minus_exact_se"] = check["se"]
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
