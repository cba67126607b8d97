"""Running a job in the command's own process (``--inline``) while the main thread shows its
progress: used by ``agents bulk`` and ``agents recover``."""

from __future__ import annotations

import threading
from collections.abc import Callable

from django.db import connection


class InlineJob(threading.Thread):
    """Calls ``work`` in a thread; an exception is kept for the main thread to report."""

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
