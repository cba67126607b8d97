"""Entry point: ``python -m agents.agentd --slug wow-cache --port 8081``."""

from __future__ import annotations

import sys

from .app import main

if __name__ == "__main__":
    sys.exit(main())
