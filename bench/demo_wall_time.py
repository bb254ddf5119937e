"""Wall time of `textebm train demo` for several settings, run side by side (one process per
setting, all started together, each with --threads), so that every setting sees the same machine
and the same load: the ratios compare, the seconds only on this machine.

A setting is NAME=ARGS, ARGS the extra `textebm train demo` options; NAME@TREE=ARGS runs the
`cli.py` of another checkout (e.g. `git worktree add ../old <commit>`), the way to time today's
settings against the code an earlier target was set on. Prints one JSON line per setting: wall
seconds (process start to exit, data and model set-up included), the run's own training seconds
where its summary.json records them, peak resident memory, and the ratio to the first setting.

    python -m bench.demo_wall_time --threads 1 'issue@../old=' 'steady=--recipe steady'
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def parse(setting: str) -> tuple[str, Path, list[str]]:
    """'NAME[@TREE]=ARGS' -> (name, tree, args)."""
    head, _, args = setting.partition("=")
    name, _, tree = head.partition("@")
    tree_path = Path(tree).resolve() if tree else ROOT
    if not any((tree_path / f).exists() for f in ("cli.py", "pipeline/cli.py")):
        raise SystemExit(f"{setting!r}: no cli.py (or, in trees of its time, pipeline/cli.py) in {tree_path}")
    return name, tree_path, shlex.split(args)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("settings", nargs="+", help="NAME[@TREE]=ARGS; the first is the baseline")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of each process")
    ap.add_argument("--max-steps", type=int, default=0, help="0: the demo default (1,500)")
    ap.add_argument("--out", default=None, help="where the runs go (default: a temporary folder)")
    a = ap.parse_args()
    out = Path(a.out or tempfile.mkdtemp(prefix="demo_wall_time_"))
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(a.threads)}
    settings = [parse(s) for s in a.settings]
    procs = {}
    for name, tree, args in settings:
        # The command line lives in cli.py; trees between two layouts had it in pipeline/cli.py.
        entry = "pipeline.cli" if (tree / "pipeline" / "cli.py").exists() else "cli"
        cmd = [sys.executable, "-c", f"from {entry} import app; app()", "train", "demo", "--quiet",
               "--threads", str(a.threads), "--out", str(out / name), *args]
        if a.max_steps:
            cmd += ["--max-steps", str(a.max_steps)]
        p = subprocess.Popen(cmd, cwd=tree, env=env, stdout=subprocess.DEVNULL,
                             stderr=open(out / f"{name}.err", "w"))
        procs[p.pid] = (name, tree, args, time.perf_counter())
    rows = {}
    while procs:  # wait4 gives each child's own peak memory
        pid, status, usage = os.wait4(-1, 0)
        if pid not in procs:
            continue
        name, tree, args, t0 = procs.pop(pid)
        summary = out / name / "summary.json"
        train_s = json.loads(summary.read_text()).get("train_seconds") if summary.exists() else None
        rows[name] = {"bench": "demo_wall_time", "setting": name, "tree": os.path.relpath(tree, ROOT), "args": args,
                      "threads": a.threads, "concurrent": len(a.settings),
                      "exit": os.waitstatus_to_exitcode(status),
                      "wall_s": round(time.perf_counter() - t0, 1), "train_s": train_s,
                      "peak_rss_mb": round(usage.ru_maxrss / 1024, 1)}
    base = rows[settings[0][0]]["wall_s"]
    for name, _, _ in settings:
        r = rows[name]
        print(json.dumps({**r, "ratio_to_first": round(r["wall_s"] / base, 3)}), flush=True)


if __name__ == "__main__":
    main()
