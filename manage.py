#!/usr/bin/env python
"""Django's command-line utility for the WAOOAW Platform Portal.

Without ``DATABASE_URL`` / ``REDIS_URL`` it first starts (or reuses) the embedded PostgreSQL
and Redis under ``var/``; servers it starts itself are stopped again when it exits.
"""

import atexit
import os
import sys


def _configured(name: str) -> bool:
    return bool(os.environ.get(name) or os.environ.get(f"{name}_FILE"))


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    if sys.argv[1:2] != ["up"]:
        # A command's own output owns stdout (scripts read it); its log lines go to stderr.
        os.environ.setdefault("LOG_STREAM", "stderr")
    if not (_configured("DATABASE_URL") and _configured("REDIS_URL")):
        # Only without a configured DATABASE_URL/REDIS_URL: the embedded servers' module.
        from portal import embedded

        environ = {
            name: "configured" for name in ("DATABASE_URL", "REDIS_URL") if _configured(name)
        }
        services = embedded.ensure_running(environ)
        os.environ.update(services.environ())
        embedded.current = services
        atexit.register(services.stop_started)
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
