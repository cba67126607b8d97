"""``manage.py helpdesk``'s detective subcommands (dispatched by the ``helpdesk`` command)."""

from __future__ import annotations

from typing import Any

COMMANDS: tuple[str, ...] = ()


def add_parsers(sub, common) -> None:
    """Add this part's subcommands to ``sub``; ``common(parser)`` adds --as and --json."""


def handle(command, name: str, options: dict[str, Any]) -> int:
    """Run subcommand ``name`` (one of COMMANDS) for ``command`` (the BaseCommand, with
    ``.actor``, ``.stdout`` and ``.console``); answers the exit status."""
    raise NotImplementedError(name)
