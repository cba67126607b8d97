"""Running a piece of test work in several threads at the same moment, for races."""

from __future__ import annotations

import threading
from collections.abc import Callable


def at_once(
    work: Callable[[], object],
    times: int,
    *,
    timeout: float | None = None,
) -> list[object]:
    """Call ``work`` in ``times`` threads released together, each closing its own database
    connection after: what each returned, in the order they finished. An exception one of them
    raised is raised here once all are done."""
    from django.db import connection

    barrier = threading.Barrier(times)
    lock = threading.Lock()
    outcomes: list[object] = []
    failures: list[BaseException] = []

    def run() -> None:
        try:
            barrier.wait()
            outcome = work()
        except BaseException as failure:  # noqa: BLE001 - handed to the test below
            with lock:
                failures.append(failure)
            return
        finally:
            connection.close()
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=run) for _ in range(times)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    if failures:
        raise failures[0]
    return outcomes
