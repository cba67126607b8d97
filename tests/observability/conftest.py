"""Observability tests drive real agents like the agent tests do: the same fixtures."""

from tests.agents.conftest import (  # noqa: F401 - fixtures for this package
    act,
    agent_root,
    bring_up,
    engine,
    seeded,
)
