"""`textebm report RUN`: one self-contained HTML page for a run folder.

Sections (each says where its numbers come from, and says so when the run lacks what it needs):
  1. settings: config.json by section, and summary.json's steps, time and precision;
  2. training curves: curves.png, or drawn from metrics.jsonl;
  3. validation over time: every `"kind": "eval"` line of metrics.jsonl (NLL/token at the
     posterior z, latent gap, the prior's coherence) with its samples;
  4. the prior chain (paper Table 3): the same chains decoded at a few steps, and the energy
     profile E(z_k) along them (drawn now from the checkpoint, or trace.txt / energy_profile.png
     where the run folder keeps only those);
  5. latent diagnostics: eval.json's `latent` part, or the last validation line;
  6. interpolations between two prior samples (needs the checkpoint);
  7. the Table 2 row (eval.json) beside the paper's.
Images are inlined as base64 PNG and the page has no script and no external reference, so it
opens offline and renders the same anywhere.
"""
from __future__ import annotations

import base64
import html
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path

from common.storage import read_json as _json
from pipeline.evaluate import PAPER_TABLE2
from textebm.plots import plot_curves, read_metrics

SECTIONS = ("Settings", "Training curves", "Validation over time", "Prior chain",
            "Latent diagnostics", "Interpolations", "Table 2")

CSS = """body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}
h1{font-size:1.5em}h2{font-size:1.2em;border-bottom:1px solid #ccc;margin-top:2em}
table{border-collapse:collapse;margin:.5em 0;font-size:.9em}td,th{border:1px solid #ddd;
padding:3px 8px;text-align:left;vertical-align:top}th{background:#f4f4f4}
.note{color:#666;font-style:italic}img{max-width:100%}code{background:#f4f4f4}
.cols{display:flex;flex-wrap:wrap;gap:0 2em;align-items:flex-start}"""


@dataclass
class ReportConfig:
    """What the report draws afresh from a checkpoint: `chains` prior chains of `steps` steps,
    decoded at `trace_at` (paper Table 3: 0, 40, 100), and an interpolation of `points` points."""
    chains: int = 5
    steps: int = 100
    trace_at: tuple[int, ...] = (0, 40, 100)
    points: int = 8
    seed: int = 0


def fmt(v) -> str:
    """How every number appears on the page (and so how a test finds it)."""
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        return f"{v:,.2f}" if abs(v) >= 100 else f"{v:.4g}"
    return str(v)


def _img(png: Path, alt: str) -> str:
    data = base64.b64encode(png.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _table(rows: list[list], head: list[str] | None = None) -> str:
    out = ["<table>"]
    if head:
        out.append("<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>")
    for r in rows:
        out.append("<tr>" + "".join(f"<td>{html.escape(fmt(c))}</td>" for c in r) + "</tr>")
    return "".join(out) + "</table>"


def _note(text: str) -> str:
    return f'<p class="note">{html.escape(text)}</p>'


def _flat(d: dict, prefix: str = "") -> list[list]:
    """{"a": {"b": 1}} -> [["a.b", 1]]; lists of numbers shown whole, other lists by length."""
    rows = []
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            rows += _flat(v, key + ".")
        elif isinstance(v, list) and not all(isinstance(x, (int, float)) for x in v):
            rows.append([key, f"({len(v)} items)"])
        else:
            rows.append([key, ", ".join(fmt(x) for x in v) if isinstance(v, list) else v])
    return rows


def settings(run: Path) -> str:
    cfg, summary = _json(run / "config.json"), _json(run / "summary.json")
    parts = [f"<div><h3>[{html.escape(s)}]</h3>" + _table(_flat(v)) + "</div>"
             for s, v in cfg.items() if isinstance(v, dict)]
    keep = ("step", "train_seconds", "sentences_seen", "precision", "threads", "final_train_nll_tok")
    if summary:
        parts.insert(0, "<div><h3>summary.json</h3>"
                     + _table([[k, summary[k]] for k in keep if k in summary]) + "</div>")
    return f'<div class="cols">{"".join(parts)}</div>' if parts else _note("no config.json")


def curves(run: Path) -> str:
    if (run / "curves.png").exists():
        return _img(run / "curves.png", "training curves")
    if (run / "metrics.jsonl").exists():
        with tempfile.TemporaryDirectory() as tmp:
            png = plot_curves(run / "metrics.jsonl", Path(tmp) / "curves.png")
            if png.exists():
                return _img(png, "training curves")
    return _note("no metrics.jsonl or curves.png kept in this folder")


VAL_COLUMNS = (("step", "step"), ("val_recon_nll_tok", "NLL/token at posterior z"),
               ("val_gap", "latent gap"), ("active_units", "active units"),
               ("energy_codes_mean", "E at codes"), ("energy_samples_mean", "E at samples"),
               ("log_z_ais", "log Z (light AIS)"), ("log_z_plain_mc", "log Z (plain MC)"))


def validation(run: Path, evals: list[dict] | None) -> str:
    if evals is None:
        return _note("no metrics.jsonl kept in this folder")
    if not evals:
        return _note("no validation line in metrics.jsonl")
    cols = [(k, name) for k, name in VAL_COLUMNS if any(k in e for e in evals)]
    rows = [[e.get(k, "") for k, _ in cols] + [" / ".join(e.get("samples", []))] for e in evals]
    return _table(rows, [name for _, name in cols] + ["samples"])


def prior_chain(run: Path, model, cfg: ReportConfig) -> str:
    if model is None:
        parts = []
        if (run / "trace.txt").exists():
            parts.append("<pre>" + html.escape((run / "trace.txt").read_text()) + "</pre>")
        if (run / "energy_profile.png").exists():
            parts.append(_img(run / "energy_profile.png", "energy profile"))
        return "".join(parts) or _note("no checkpoint, trace.txt or energy_profile.png in this folder")
    from textebm.api import plot_energy_profile
    s = model.sample_chains(cfg.chains, steps=cfg.steps, trace_at=cfg.trace_at, profile=True,
                            seed=cfg.seed, sampler="chain")
    rows = [[i + 1, tp.step, float(tp.energy[i]), tp.sentences[i]]
            for i in range(cfg.chains) for tp in s.trace]
    with tempfile.TemporaryDirectory() as tmp:
        png = plot_energy_profile(s.profile, Path(tmp) / "profile.png", cfg.trace_at)
        img = _img(png, "energy profile")
    return (_note(f"{cfg.chains} prior chains of {cfg.steps} steps (seed {cfg.seed}), the run's "
                  f"step size and sampling noise, decoded ancestrally at steps "
                  f"{', '.join(map(str, cfg.trace_at))}; E(z) = -f(z)")
            + _table(rows, ["chain", "step", "E(z)", "sentence"]) + img)


def latent(run: Path, evals: list[dict] | None) -> str:
    ev = _json(run / "eval.json")
    if isinstance(ev.get("latent"), dict) and ev["latent"]:
        return _note("eval.json, latent part") + _table(_flat(ev["latent"]))
    if evals:
        last = {k: v for k, v in evals[-1].items() if k not in ("samples", "kind")}
        return _note(f"the last validation (step {last.get('step')}); run `textebm evaluate` "
                     "for the full set") + _table(_flat(last))
    return _note("no eval.json latent part and no validation line")


def interpolations(model, cfg: ReportConfig) -> str:
    if model is None:
        return _note("no checkpoint in this folder: interpolations need the model")
    a, b = model.sample(2, seed=cfg.seed + 1)
    it = model.interpolate(a, b, points=cfg.points, seed=cfg.seed)
    rows = [[float(t), s] for t, s in zip(it.t.tolist(), it.sentences)]
    return (_note("between the posterior codes of two prior samples, greedy decoding")
            + _table(rows, ["t", "sentence"]))


def table2(run: Path) -> str:
    ev, cfg = _json(run / "eval.json"), _json(run / "config.json")
    if "fppl" not in ev:
        return _note("no FPPL/RPPL in eval.json: run `textebm evaluate`")
    corpus = cfg.get("train", {}).get("corpus", "?")
    nll = (ev.get("nll") or {}).get("nll")
    rows = [[run.name, r.get("lm"), r.get("real_fppl"), r.get("fppl"), r.get("rppl"),
             nll if nll is not None else "–", r.get("samples")]
            for r in ev.get("by_lm", {ev.get("lm"): ev}).values()]
    paper = PAPER_TABLE2.get(corpus)
    if paper:
        rows.append(["paper (Pang et al. 2020)", "?", *paper, "?"])
    return _table(rows, ["model", "judge", "real-data FPPL", "FPPL", "RPPL", "NLL", "samples"])


def build_report(run: Path, model=None, cfg: ReportConfig = ReportConfig()) -> str:
    """The page for run folder `run`; `model`: the run loaded (textebm.load) where its
    checkpoint exists, for the sections drawn afresh."""
    run = Path(run)
    # The validation lines, read once for the two sections that show them (None: no file).
    evals = read_metrics(run / "metrics.jsonl")[1] if (run / "metrics.jsonl").exists() else None
    body = {"Settings": settings(run), "Training curves": curves(run),
            "Validation over time": validation(run, evals),
            "Prior chain": prior_chain(run, model, cfg), "Latent diagnostics": latent(run, evals),
            "Interpolations": interpolations(model, cfg),
            "Table 2": table2(run)}
    title = f"textebm run {run.name}"
    sections = "".join(f'<section id="s{i}"><h2>{html.escape(name)}</h2>{body[name]}</section>'
                       for i, name in enumerate(SECTIONS))
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>'
            f"{html.escape(title)}</title><style>{CSS}</style></head><body><h1>"
            f"{html.escape(title)}</h1>{sections}</body></html>\n")
