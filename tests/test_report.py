"""`textebm report`: one self-contained page per run, checked in a real headless browser where
Debian's chromium is installed (.ci/run installs it), and `--tensorboard` event files read back."""
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cli import app
from pipeline.report import SECTIONS, build_report, fmt

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SMALL = ["--max-steps", "40", "--eval-every", "20", "--save-every", "20", "--batch-size", "16",
         "--quiet", "--threads", "1"]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """A fresh demo run, trained through the CLI with TensorBoard on."""
    out = tmp_path_factory.mktemp("report") / "run"
    toml = out.parent / "small.toml"
    toml.write_text("[decoder]\nembed = 16\nhidden = 32\n[langevin]\nk0 = 20\n")
    r = runner.invoke(app, ["train", "demo", "--out", str(out), "--config", str(toml),
                            "--tensorboard", str(out / "tb"), *SMALL])
    assert r.exit_code == 0, r.output
    return out


def _browser(page: Path, tmp: Path) -> tuple[str, np.ndarray, str]:
    """(rendered DOM, screenshot pixels, chromium's log) of `page` in headless chromium."""
    base = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
            "--enable-logging=stderr", "--v=0", f"--user-data-dir={tmp / 'profile'}"]
    dom = subprocess.run([*base, "--dump-dom", page.as_uri()], capture_output=True, text=True,
                         timeout=120)
    png = tmp / "shot.png"
    shot = subprocess.run([*base, "--window-size=1200,2400", f"--screenshot={png}", page.as_uri()],
                          capture_output=True, text=True, timeout=120)
    import matplotlib.image
    return dom.stdout, matplotlib.image.imread(png), dom.stderr + shot.stderr


def _console_errors(log: str) -> list[str]:
    # Chromium logs the page's console as CONSOLE lines; failed loads as net:: errors.
    return [ln for ln in log.splitlines()
            if ("CONSOLE" in ln and re.search(r"error|uncaught", ln, re.I)) or "net::ERR" in ln]


def test_report_of_a_fresh_run_has_every_section_and_its_numbers(demo_run, tmp_path):
    r = runner.invoke(app, ["report", str(demo_run), "--out", str(tmp_path / "r.html")])
    assert r.exit_code == 0, r.output
    page = (tmp_path / "r.html").read_text()
    for name in SECTIONS:
        assert f"<h2>{name}</h2>" in page, name
    # Self-contained: no script, no external fetch; images inlined.
    assert "<script" not in page and "http://" not in page and "https://" not in page
    assert page.count("data:image/png;base64,") >= 2          # curves + energy profile
    evals = [json.loads(x) for x in (demo_run / "metrics.jsonl").read_text().splitlines()
             if '"kind": "eval"' in x]
    assert len(evals) == 2
    for ev in evals:                                          # validation rows: the file's numbers
        assert f"<td>{fmt(ev['val_recon_nll_tok'])}</td>" in page
        assert f"<td>{fmt(ev['val_gap'])}</td>" in page
    cfg = json.loads((demo_run / "config.json").read_text())
    assert f"<td>{fmt(cfg['langevin']['k0'])}</td>" in page
    assert "no checkpoint" not in page                        # trace and interpolation drawn
    assert page.count("<td>100</td>") >= 5                    # each chain decoded at step 100


def test_report_of_the_committed_ptb_row_in_a_browser(tmp_path):
    run = ROOT / "results" / "ptb" / "ebm-2h"
    page_path = tmp_path / "ptb.html"
    page_path.write_text(build_report(run))
    page = page_path.read_text()
    ev = json.loads((run / "eval.json").read_text())
    for lm in ev["by_lm"].values():                           # the Table 2 rows, as in eval.json
        for k in ("fppl", "rppl", "real_fppl"):
            assert f"<td>{fmt(lm[k])}</td>" in page
    assert "<td>107.45</td>" in page and "<td>181.54</td>" in page   # the paper's row beside
    assert "interpolations need the model" in page           # no weights were committed
    if CHROMIUM is None:
        pytest.skip("no chromium here (.ci/run installs Debian's chromium)")
    dom, pixels, log = _browser(page_path, tmp_path)
    assert not _console_errors(log), _console_errors(log)
    for name in SECTIONS:
        assert f"<h2>{name}</h2>" in dom, name
    assert f"<td>{fmt(ev['by_lm']['ngram']['fppl'])}</td>" in dom
    # Not blank: the screenshot has text and figures, not one flat colour.
    rgb = pixels[..., :3]
    assert rgb.std() > 0.05 and (rgb.mean(-1) < 0.5).mean() > 0.005


def test_report_refuses_a_folder_that_is_not_a_run(tmp_path):
    r = runner.invoke(app, ["report", str(tmp_path)])
    assert r.exit_code != 0 and "Traceback" not in r.output and "not a run folder" in r.output


def test_tensorboard_scalars_are_the_metrics_file(demo_run):
    pytest.importorskip("tensorboard")
    from common.tensorboard import read_scalars
    tb = read_scalars(demo_run / "tb")
    lines = [json.loads(x) for x in (demo_run / "metrics.jsonl").read_text().splitlines()]
    steps = [m for m in lines if m.get("kind") != "eval"]
    evals = [m for m in lines if m.get("kind") == "eval"]
    got = dict(tb["train/nll_tok"])
    assert sorted(got) == [m["step"] for m in steps]
    for m in steps:
        assert got[m["step"]] == pytest.approx(m["nll_tok"], rel=1e-6)
    assert [s for s, _ in tb["valid/val_gap"]] == [e["step"] for e in evals]
    assert [v for _, v in tb["valid/val_gap"]] == pytest.approx([e["val_gap"] for e in evals], rel=1e-6)
    assert "train/e_pos_minus_neg" in tb
    # The validation samples as text and the prior chains' energy profile as an image.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(demo_run / "tb"), size_guidance={"images": 0, "tensors": 0})
    acc.Reload()
    texts = acc.Tensors("samples/text_summary")
    assert [t.step for t in texts] == [e["step"] for e in evals]
    assert texts[-1].tensor_proto.string_val[0].decode() == "\n".join(f"- {x}" for x in evals[-1]["samples"])
    assert [i.step for i in acc.Images("prior/energy_profile")] == [e["step"] for e in evals]


def test_tensorboard_without_the_package_is_one_line(tmp_path, monkeypatch):
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "tensorboard" else real(name, *a))
    r = runner.invoke(app, ["train", "demo", "--out", str(tmp_path / "r"), "--tensorboard",
                            str(tmp_path / "tb"), *SMALL])
    assert r.exit_code != 0 and "tensorboard package" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "r").exists()                      # refused before a run folder
