"""Stopping on a signal, and one writer per run folder: what long runs need to lose nothing.

SIGINT (Ctrl-C), SIGTERM (schedulers, `timeout`, shutdowns) and SIGHUP (a closed terminal) end a
command the same way: an `Interrupted` exception, a KeyboardInterrupt that names its signal, so
every `except KeyboardInterrupt` that saves state (training, the LSTM LM, an evaluation's NLL)
saves it for all three. `DeferredStop` lets a training loop finish the iteration it is in first.

`RunLock` keeps a second `train` off a run folder that is being trained: a lock file with the
owner's PID and host, taken over when that process is gone (a lock left by kill -9).

Shared by textebm and lm_eval (both depend on corpora, the one neutral place for it).
"""
from __future__ import annotations

import json
import os
import signal
import socket
import threading
from pathlib import Path

from common.storage import CheckpointError

SIGNALS = tuple(getattr(signal, n) for n in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, n))


class Interrupted(KeyboardInterrupt):
    """Stopped by a signal; `exit_code` is the shell's 128 + signal number."""

    def __init__(self, signum: int = signal.SIGINT):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.name = signal.Signals(signum).name
        self.exit_code = 128 + signum


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def raise_on_signals() -> None:
    """From now on SIGTERM and SIGHUP (and SIGINT) raise `Interrupted` in the main thread, as
    Ctrl-C raises KeyboardInterrupt. Installed by every CLI command."""
    if not _main_thread():
        return

    def handle(signum, frame):
        raise Interrupted(signum)

    for s in SIGNALS:
        signal.signal(s, handle)


class DeferredStop:
    """While active, a signal of SIGNALS is noted (`requested`: its number) instead of raised, so
    that a loop can finish its step and save a whole one; a second signal raises at once."""

    def __init__(self):
        self.requested: int | None = None
        self._old: dict = {}
        if _main_thread():
            for s in SIGNALS:
                self._old[s] = signal.signal(s, self._handle)

    def _handle(self, signum, frame):
        if self.requested is not None:
            raise Interrupted(signum)
        self.requested = signum

    def check(self) -> None:
        """Raise `Interrupted` if a signal came."""
        if self.requested is not None:
            raise Interrupted(self.requested)

    def restore(self) -> None:
        for s, old in self._old.items():
            signal.signal(s, old)


class RunLock:
    """`run_dir/.lock` holding {"pid", "host"} while a process writes the folder.

    Taking it fails with a CheckpointError naming the owner when that process is alive on this
    host; a lock whose process is gone (or unreadable) is stale and taken over."""

    def __init__(self, run_dir: Path, what: str = "training", create: bool = True):
        self.path = Path(run_dir) / ".lock"
        self.what = what
        self.create = create   # make the folder if it does not exist (a new run)
        self.held = False

    def acquire(self) -> "RunLock":
        if not self.path.parent.is_dir():
            if not self.create:
                raise CheckpointError(f"no run folder at {self.path.parent}")
            self.path.parent.mkdir(parents=True)
        me = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "what": self.what})
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = lock_owner(self.path)
                if owner is not None:
                    raise CheckpointError(
                        f"{self.path.parent} is in use by process {owner['pid']} "
                        f"({owner.get('what', 'training')}); wait for it to finish or stop it "
                        f"(a lock left by a killed process is taken over by itself)") from None
                self.path.unlink(missing_ok=True)  # stale: its process is gone
                continue
            with os.fdopen(fd, "w") as f:
                f.write(me + "\n")
            self.held = True
            return self
        raise CheckpointError(f"could not lock {self.path.parent} (another process keeps taking it)")

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def lock_owner(path: Path) -> dict | None:
    """The lock's owner if that process still runs on this host, else None (a stale lock)."""
    try:
        owner = json.loads(path.read_text())
        pid = int(owner["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if owner.get("host") != socket.gethostname():
        return owner   # another machine's (a shared disk): its process cannot be checked
    if pid == os.getpid():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return owner   # alive, another user's
    return owner
