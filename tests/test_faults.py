"""The faults long CPU runs meet: SIGTERM, a full disk, two writers on one run folder, a metrics
line cut short. Each test fails without the handling it names."""
import errno
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import common.storage as storage
from common.interrupt import RunLock
from common.storage import CheckpointError, DiskFullError
from textebm.checkpoint import load_checkpoint
from textebm.plots import read_metrics
from tests.test_train import run, small_cfg

REPO = Path(__file__).resolve().parents[1]
TINY = ["--batch-size", "16", "--k0", "3", "--k1", "3", "--eval-every", "0", "--save-every",
        "1000", "--quiet", "--threads", "1"]


def cli(*args: str) -> list[str]:
    return [sys.executable, "-c", "from cli import app; app()", *args]


def small_toml(tmp_path: Path) -> str:
    cfg = tmp_path / "small.toml"
    cfg.write_text("[decoder]\nembed = 8\nhidden = 16\n")
    return str(cfg)


def same_weights(a: Path, b: Path) -> bool:
    wa, wb = load_checkpoint(a)["model"], load_checkpoint(b)["model"]
    return all(torch.equal(wa[k], wb[k]) for k in wa)


def test_sigterm_saves_a_whole_step_and_resume_is_bit_identical(tmp_path):
    toml, run_dir = small_toml(tmp_path), tmp_path / "run"
    proc = subprocess.Popen(cli("train", "demo", "--config", toml, "--out", str(run_dir),
                                "--max-steps", "40", *TINY),
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = run_dir / "metrics.jsonl"
    deadline = time.time() + 180
    while time.time() < deadline and (not metrics.exists() or len(metrics.read_text().splitlines()) < 3):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "SIGTERM" in err and "--resume" in err and "Traceback" not in err
    step = load_checkpoint(run_dir)["step"]
    assert 3 <= step < 40
    assert [m["step"] for m in read_metrics(metrics)[0]] == list(range(1, step + 1))
    assert not (run_dir / ".lock").exists()
    r = subprocess.run(cli("train", "demo", "--resume", str(run_dir), "--quiet", "--threads", "1"),
                       cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    r = subprocess.run(cli("train", "demo", "--config", toml, "--out", str(tmp_path / "whole"),
                           "--max-steps", "40", *TINY), cwd=REPO, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    assert same_weights(run_dir, tmp_path / "whole")
    assert [m["step"] for m in read_metrics(metrics)[0]] == list(range(1, 41))


def test_a_second_writer_is_refused_and_a_stale_lock_is_taken_over(tmp_path):
    toml, run_dir = small_toml(tmp_path), tmp_path / "run"
    run_dir.mkdir()
    lock = run_dir / ".lock"
    # A live owner (this test process) on this host: the second train refuses, in one line.
    lock.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "what": "textebm train"}))
    args = cli("train", "demo", "--config", toml, "--out", str(run_dir), "--max-steps", "2", *TINY)
    r = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and f"in use by process {os.getpid()}" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and not (run_dir / "checkpoint.pt").exists()
    # The owner is gone (killed without cleaning up): the lock is stale and taken over.
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True)
    lock.write_text(json.dumps({"pid": int(dead.stdout), "host": socket.gethostname()}))
    r = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert load_checkpoint(run_dir)["step"] == 2 and not lock.exists()


def test_run_lock_in_process(tmp_path):
    with RunLock(tmp_path / "a") as held:
        assert held.held and (tmp_path / "a" / ".lock").exists()
    assert not (tmp_path / "a" / ".lock").exists()
    with pytest.raises(CheckpointError, match="no run folder"):
        RunLock(tmp_path / "missing", create=False).acquire()


def test_a_full_disk_keeps_the_last_checkpoint_and_resume_works(demo, tmp_path, monkeypatch):
    real = os.replace
    saves = {"n": 0}

    def replace(src, dst):
        if Path(dst).name == "checkpoint.pt":
            saves["n"] += 1
            if saves["n"] == 3:   # the third save meets a full disk
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(src, dst)

    monkeypatch.setattr(storage.os, "replace", replace)
    with pytest.raises(DiskFullError, match=r"checkpoint.pt in .*MB needed"):
        run(small_cfg(4, save_every=1), demo, tmp_path / "b")
    assert load_checkpoint(tmp_path / "b")["step"] == 2          # the last good save, loadable
    assert not list((tmp_path / "b").glob("*.tmp"))
    monkeypatch.setattr(storage.os, "replace", real)
    run(small_cfg(4, save_every=1), demo, tmp_path / "b", resume=True)
    run(small_cfg(4, save_every=1), demo, tmp_path / "a")
    assert same_weights(tmp_path / "a", tmp_path / "b")


def test_a_file_size_limit_is_one_line_not_a_traceback(tmp_path):
    # RLIMIT_FSIZE in the child: config.json and vocab.txt fit, the checkpoint does not.
    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (60_000, 60_000))

    r = subprocess.run(cli("train", "demo", "--config", small_toml(tmp_path), "--out",
                           str(tmp_path / "run"), "--max-steps", "2", *TINY),
                       cwd=REPO, capture_output=True, text=True, timeout=300, preexec_fn=limit)
    assert r.returncode == 2, r.stderr
    assert "no space to write checkpoint.pt" in r.stderr and "Traceback" not in r.stderr
    assert not list((tmp_path / "run").glob("*.tmp"))
    assert json.loads((tmp_path / "run" / "config.json").read_text())["train"]["max_steps"] == 2


def test_a_metrics_line_cut_short_is_skipped_and_repaired_on_resume(demo, tmp_path):
    run(small_cfg(2, save_every=1), demo, tmp_path)
    metrics = tmp_path / "metrics.jsonl"
    whole = metrics.read_text()
    # kill -9 after step 3 was logged (its checkpoint never written) and mid-way through step 4.
    step3 = dict(json.loads(whole.splitlines()[-1]), step=3)
    metrics.write_text(whole + json.dumps(step3) + "\n" + '{"loss_dec": 1.5, "nll_t')
    with pytest.warns(RuntimeWarning, match="line 4 is not whole JSON"):
        steps, _ = read_metrics(metrics)
    assert [m["step"] for m in steps] == [1, 2, 3]
    with pytest.warns(RuntimeWarning, match="dropped 2 line"):
        run(small_cfg(4, save_every=1), demo, tmp_path, resume=True)
    lines = metrics.read_text().splitlines()
    assert [json.loads(ln)["step"] for ln in lines] == [1, 2, 3, 4]


def test_a_million_token_line_is_never_split_into_a_million_strings(tmp_path):
    # One runaway line (10^6 tokens, 2 MB) among ordinary ones: dropped (or cut) while reading,
    # with the reader's peak memory far below the ~60 MB a list of its words would take.
    import tracemalloc
    from corpora.preprocess import ReadStats, read_sentences
    f = tmp_path / "huge.txt"
    f.write_text("the cat sat .\n" + "w " * 1_000_000 + "\n" + "a dog ran .\n")
    for on_long, kept in (("drop", 2), ("cut", 3)):
        stats = ReadStats()
        tracemalloc.start()
        sents = read_sentences(f, "mine", 400, on_long, stats)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert len(sents) == kept and peak < 20e6, (on_long, peak)
        assert (stats.long_dropped, stats.long_cut) == ((1, 0) if on_long == "drop" else (0, 1))
    assert sents[1] == ["w"] * 400


def test_sentences_share_one_string_per_word_type(tmp_path):
    # 10^6 sentences of 20 tokens would be 20 million string objects; one per word type keeps a
    # corpus of that size near 200 MB of pointers (bench/huge_inputs.py measures it).
    from corpora.preprocess import read_sentences
    f = tmp_path / "many.txt"
    f.write_text("".join(f"the cat number {i % 7} sat .\n" for i in range(1000)))
    sents = read_sentences(f, "mine", 400)
    assert sents[0][0] is sents[999][0] and sents[3][3] is sents[10][3]


def test_sigterm_and_sighup_raise_what_ctrl_c_raises():
    # Every command installs this: evaluate's kept parts and NLL progress, and lm lstm's epochs,
    # are saved by their `except KeyboardInterrupt`, so SIGTERM and SIGHUP must land there too.
    from common.interrupt import SIGNALS, Interrupted, raise_on_signals
    old = {s: signal.getsignal(s) for s in SIGNALS}
    try:
        raise_on_signals()
        for s, code in ((signal.SIGTERM, 143), (signal.SIGHUP, 129)):
            with pytest.raises(KeyboardInterrupt) as e:
                signal.raise_signal(s)
            assert isinstance(e.value, Interrupted) and e.value.exit_code == code
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def test_two_processes_marking_the_latest_run_at_once_both_succeed(tmp_path):
    # Two benchmark workers finishing chunks at the same moment once shared one temporary name for
    # runs/latest, and one rename found the other's file gone (FileNotFoundError, a failed chunk).
    # Each writer waits at a barrier (both ready files present) so that their loops overlap.
    code = ("import sys, time\nfrom pathlib import Path\nfrom textebm.runs import mark_latest\n"
            "run, me, other = sys.argv[1:]\nPath(me).touch()\n"
            "Path(run).mkdir()\n[(Path(run) / f).touch() for f in ('config.json', 'vocab.txt', "
            "'checkpoint.pt')]\n"
            "while not Path(other).exists():\n    time.sleep(0.001)\n"
            "for i in range(2000):\n    mark_latest(run)\n")
    env = {**os.environ, "TEXTEBM_RUNS": str(tmp_path / "runs"), "PYTHONPATH": str(REPO)}
    ready = [str(tmp_path / f"ready{k}") for k in range(2)]
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path / f"run{k}"), ready[k],
                               ready[1 - k]], env=env, stderr=subprocess.PIPE, text=True)
             for k in range(2)]
    for p in procs:
        assert p.wait(timeout=120) == 0, p.stderr.read()
    assert (tmp_path / "runs" / "latest").read_text().strip() in {str(tmp_path / "run0"), str(tmp_path / "run1")}
    assert not list((tmp_path / "runs").glob("*.tmp"))
