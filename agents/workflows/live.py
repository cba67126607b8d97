"""The workflow pages' live updates (filled in with the pages): ``run_changed`` is called by the
engine whenever a run or one of its steps changed, inside the transaction that changed it."""

from __future__ import annotations


def run_changed(run_id: int) -> None:
    """Beat the list and the run's page once the change commits."""
