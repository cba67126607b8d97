"""What every app's management commands share: one watcher for a job that a worker (or this
process, with ``--inline``) carries out, refusals as command errors, and JSON written as the
API writes it.

Generic on purpose: ``portal`` imports no app. A command passes in how to read its job
(``poll``), and turns the exit status and the job's row into its own report.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from django.core.exceptions import PermissionDenied
from django.core.management.base import CommandError
from django.db import connection
from ninja.responses import NinjaJSONEncoder
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from portal.refusals import Refused

# A job still waiting this long for a worker gets the hint below.
PICKUP_HINT_SECONDS = 10
POLL_SECONDS = 0.3
NO_WORKER = "No worker has picked this up yet. Is the portal running (`manage.py up`)?"


@dataclass(frozen=True)
class JobProgress:
    """One look at a job, as ``poll`` returns it.

    ``status`` is shown after the job's label (``running``, ``RUNNING, restarting``); with a
    ``total`` the watcher draws a bar of ``done`` out of it, without one a spinner.
    ``picked_up`` is False while no worker has begun the job; ``succeeded`` decides the exit
    status once it has ``finished``.
    """

    status: str
    finished: bool
    succeeded: bool = False
    picked_up: bool = True
    done: int = 0
    total: int | None = None
    counts: str = ""  # rich markup after the bar: "✓ 3 ✗ 0 ↷ 1 ~12 s left"


def watch_job(
    poll: Callable[[], JobProgress],
    *,
    console: Console,
    label: str,
    no_worker_hint: str = "",
    on_interrupt: Callable[[], bool] | None = None,
    poll_seconds: float = POLL_SECONDS,
    hint_after: float = PICKUP_HINT_SECONDS,
) -> int:
    """Show the job's progress on ``console`` until ``poll`` says it finished; the exit status:
    0 when it succeeded, 1 otherwise.

    After ``hint_after`` seconds without a worker, says so once (with ``no_worker_hint``: what
    to do about it). Ctrl-C asks ``on_interrupt`` whether to keep watching (it may cancel the
    job, say); without it, or when it answers False, the ``KeyboardInterrupt`` goes on to the
    command, which says how to follow the job from then on.
    """
    started = time.monotonic()
    hinted = False
    progress = poll()
    display = _spinner if progress.total is None else _bar
    with display(console, label, progress.total, started) as show:
        while True:
            try:
                show(progress)
                if progress.finished:
                    return 0 if progress.succeeded else 1
                if not (hinted or progress.picked_up) and time.monotonic() - started > hint_after:
                    console.print(f"[yellow]{NO_WORKER} {no_worker_hint}".rstrip() + "[/]")
                    hinted = True
                time.sleep(poll_seconds)
                progress = poll()
            except KeyboardInterrupt:
                if on_interrupt is None or not on_interrupt():
                    raise


@contextmanager
def _spinner(
    console: Console, label: str, total: int | None, started: float
) -> Iterator[Callable[[JobProgress], None]]:
    """A spinner with the job's status and the seconds it has taken (nothing when piped)."""
    with console.status(f"{label}…") as status:

        def show(progress: JobProgress) -> None:
            elapsed = time.monotonic() - started
            status.update(f"{label}: {progress.status}… {elapsed:.0f} s")

        yield show


@contextmanager
def _bar(
    console: Console, label: str, total: int | None, started: float
) -> Iterator[Callable[[JobProgress], None]]:
    """A progress bar: done out of total, the counts, the time taken (its last state stays)."""
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[counts]}"),
        TimeElapsedColumn(),
        console=console,
    )
    with bar:
        task = bar.add_task(label, total=total or 1, counts="")

        def show(progress: JobProgress) -> None:
            bar.update(
                task,
                completed=progress.done,
                description=f"{label}: {progress.status}",
                counts=progress.counts,
            )

        yield show


class InlineJob(threading.Thread):
    """A job run in the command's own process (``--inline``, when no worker is up) while the
    main thread watches it; an exception is kept for the main thread to report."""

    def __init__(self, name: str, work: Callable[[], object]) -> None:
        super().__init__(name=name)
        self.work = work
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.work()
        except BaseException as error:  # reported by the main thread
            self.error = error
        finally:
            connection.close()  # this thread's connection is its own

    def finish(self) -> BaseException | None:
        """Wait for the job to end; what it raised, if anything."""
        self.join()
        return self.error


@contextmanager
def refusals_as_command_errors(returncode: int = 1) -> Iterator[None]:
    """A service's refusal (or a missing permission) ends the command with its sentence and
    ``returncode``; nothing was changed."""
    try:
        yield
    except PermissionDenied as denied:
        raise CommandError(str(denied), returncode=returncode) from None
    except Refused as refused:
        raise CommandError(refused.message, returncode=returncode) from None


def dumps(value: object) -> str:
    """``value`` as JSON, written as the API writes it (schemas by their fields, times in ISO
    8601), so a script reads the same from ``--json`` and from the API."""
    return json.dumps(value, indent=2, cls=NinjaJSONEncoder)


# --- acting as someone: ``--as USERNAME`` and ``--json`` ----------------------------------------

REFUSED = 2


def add_common_options(parser) -> None:
    """``--as USERNAME`` and ``--json``, which every acting subcommand takes."""
    parser.add_argument("--as", dest="as_user", default=None, metavar="USERNAME",
                        help="Act as this user, with their role (default: the shell's Admin).")  # fmt: skip
    parser.add_argument("--json", action="store_true", help="JSON, as the API answers.")


def command_actor(name: str, username: str | None):
    """The actor a command acts as: ``username`` with their role, or the shell's Admin."""
    from django.contrib.auth import get_user_model

    from portal.actors import Actor

    if username is None:
        return Actor.command(name)
    user = get_user_model().objects.filter(username=username).first()
    if user is None:
        raise CommandError(f"No user {username[:60]!r}; --as takes a username.", returncode=REFUSED)
    return Actor.command(name, user=user)
