"""The supervisor's two layers with real processes: data stores first and last, restarts clean.

Each child is a small Python script that leaves marks in a directory: when it started, what it
saw, when it was asked to stop. The supervisor runs in the test's main thread (it installs signal
handlers); a helper thread ends it the way a terminal would, with a SIGTERM to this process.
"""

from __future__ import annotations

import io
import os
import signal
import sys
import textwrap
import threading
import time
from pathlib import Path

import psutil
import pytest

from portal.supervisor import ChildSpec, Supervisor


def script(body: str) -> list[str]:
    """A child running ``body``; a SIGTERM makes it write a ``<name>.term`` mark and exit."""
    prelude = textwrap.dedent(
        """
        import os, signal, sys, time
        from pathlib import Path
        marks, name = Path(sys.argv[1]), sys.argv[2]
        def mark(what, text=""):
            # Whole or not at all: the test reads marks while they are written.
            part = marks / f"{name}.{what}.part"
            part.write_text(text or repr(time.time()))
            part.rename(marks / f"{name}.{what}")
        def on_term(signum, frame):
            mark("term")
            time.sleep(float(os.environ.get("STOP_SECONDS", "0")))
            mark("exit")
            sys.exit(0)
        signal.signal(signal.SIGTERM, on_term)
        """
    )
    return [sys.executable, "-c", prelude + textwrap.dedent(body)]


def child(marks: Path, name: str, body: str, **fields) -> ChildSpec:
    spec = ChildSpec(name, script(body), **fields)
    spec.argv += [str(marks), name]
    return spec


def stop_when(condition, timeout: float = 20) -> threading.Thread:
    """SIGTERM this process (as Ctrl-C would) once ``condition()`` holds, or after ``timeout``."""

    def watch() -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not condition():
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def wait_for(condition, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition never held"
        time.sleep(0.05)


SLOW_START = """
time.sleep(0.5)
mark("ready")
while True:
    time.sleep(1)
"""

APP = """
mark("saw-store-ready", str((marks / "store.ready").exists()))
while True:
    time.sleep(1)
"""


@pytest.mark.timeout(60)
def test_the_app_starts_after_its_store_answers_and_prepare_ran_and_stops_before_it(
    tmp_path: Path,
) -> None:
    store = child(tmp_path, "store", SLOW_START, ready=lambda: (tmp_path / "store.ready").exists())
    app = child(tmp_path, "app", APP, env={"STOP_SECONDS": "1"})
    prepared = []

    def prepare() -> None:
        # The store answers, and nothing of the app runs yet.
        prepared.append(
            (tmp_path / "store.ready").exists() and not (tmp_path / "app.saw-store-ready").exists()
        )

    out = io.StringIO()
    stop_when(lambda: (tmp_path / "app.saw-store-ready").exists())
    code = Supervisor([app], stores=[store], out=out).run(prepare=prepare)

    assert code == 0, out.getvalue()
    assert prepared == [True]
    assert (tmp_path / "app.saw-store-ready").read_text() == "True"
    # The app took a second to stop; only then was the store asked to stop.
    app_exit = float((tmp_path / "app.exit").read_text())
    store_term = float((tmp_path / "store.term").read_text())
    assert store_term >= app_exit
    lines = out.getvalue().splitlines()
    assert lines.index("up    | app stopped (status 0)") < lines.index(
        "up    | store stopped (status 0)"
    )


@pytest.mark.timeout(60)
def test_a_killed_store_is_restarted_with_its_command_and_its_leftovers_are_killed(
    tmp_path: Path,
) -> None:
    # The store starts a helper in its own process group, as a postmaster starts its backends.
    body = """
    import subprocess
    helper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    runs = int((marks / "store.runs").read_text()) if (marks / "store.runs").exists() else 0
    (marks / "store.runs").write_text(str(runs + 1))
    mark(f"pids-{runs + 1}", f"{os.getpid()} {helper.pid} {' '.join(sys.argv[1:])}")
    while True:
        time.sleep(1)
    """
    store = child(tmp_path, "store", body, ready=lambda: (tmp_path / "store.pids-1").exists())
    out = io.StringIO()
    first: list[psutil.Process] = []

    def kill_the_store_once_then_wait_for_its_return() -> bool:
        if not first:
            if not (tmp_path / "store.pids-1").exists():
                return False
            pid, helper, _ = (tmp_path / "store.pids-1").read_text().split(" ", 2)
            first.extend([psutil.Process(int(pid)), psutil.Process(int(helper))])
            first[0].kill()
        return (tmp_path / "store.pids-2").exists() and "store is back" in out.getvalue()

    stop_when(kill_the_store_once_then_wait_for_its_return)
    code = Supervisor([], stores=[store], out=out).run()

    assert code == 0, out.getvalue()
    assert "store exited with status -9; restarting in 1 s" in out.getvalue()
    # The orphaned helper of the killed run did not survive it.
    wait_for(lambda: not first[1].is_running() or first[1].status() == psutil.STATUS_ZOMBIE)
    pid_1, _, args_1 = (tmp_path / "store.pids-1").read_text().split(" ", 2)
    pid_2, _, args_2 = (tmp_path / "store.pids-2").read_text().split(" ", 2)
    assert pid_2 != pid_1 and args_2 == args_1


@pytest.mark.timeout(60)
def test_a_store_that_never_answers_fails_the_start_and_nothing_else_starts(
    tmp_path: Path,
) -> None:
    store = child(tmp_path, "store", "while True: time.sleep(1)", ready=lambda: False)
    app = child(tmp_path, "app", APP)
    out = io.StringIO()

    code = Supervisor([app], stores=[store], ready_timeout=1, out=out).run(
        prepare=lambda: pytest.fail("prepare ran without its store")
    )

    assert code == 1
    assert "store was not ready after 1 s" in out.getvalue()
    assert (tmp_path / "store.term").exists()
    assert not (tmp_path / "app.saw-store-ready").exists()


@pytest.mark.timeout(60)
def test_a_store_that_exits_at_start_says_so(tmp_path: Path) -> None:
    store = child(
        tmp_path, "store", "print('no such data directory'); sys.exit(3)", ready=lambda: False
    )
    out = io.StringIO()

    code = Supervisor([], stores=[store], out=out).run()

    assert code == 1
    wait_for(lambda: "no such data directory" in out.getvalue())
    assert "store exited with status 3 before it was ready" in out.getvalue()


@pytest.mark.timeout(60)
def test_a_stop_during_prepare_interrupts_it_and_stops_the_stores(tmp_path: Path) -> None:
    store = child(tmp_path, "store", SLOW_START, ready=lambda: (tmp_path / "store.ready").exists())
    app = child(tmp_path, "app", APP)
    preparing = threading.Event()

    def prepare() -> None:
        preparing.set()
        time.sleep(30)  # a migration that takes long

    out = io.StringIO()
    stop_when(preparing.is_set)
    started = time.monotonic()
    code = Supervisor([app], stores=[store], out=out).run(prepare=prepare)

    assert code == 0
    assert time.monotonic() - started < 10
    assert (tmp_path / "store.term").exists()
    assert not (tmp_path / "app.saw-store-ready").exists()
