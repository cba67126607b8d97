"""Typed readers for settings taken from the environment.

Each reader returns a safe default when the variable is unset or empty, and raises
``ImproperlyConfigured`` naming the variable and the accepted form when the value is bad, so a
typo in a deployment fails at start with a message instead of misbehaving later.
Secrets can also come from a file: ``NAME_FILE=/run/secrets/name`` is read when ``NAME`` is unset.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

TRUE_WORDS = {"1", "true", "yes", "on"}
FALSE_WORDS = {"0", "false", "no", "off"}


class Env:
    """Reads typed values from a mapping (``os.environ`` by default)."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self.environ = os.environ if environ is None else environ

    def _raw(self, name: str) -> str | None:
        value = self.environ.get(name)
        if value is None or value.strip() == "":
            return None
        return value.strip()

    def str(self, name: str, default: str = "") -> str:
        value = self._raw(name)
        return default if value is None else value

    def bool(self, name: str, default: bool = False) -> bool:
        value = self._raw(name)
        if value is None:
            return default
        if value.lower() in TRUE_WORDS:
            return True
        if value.lower() in FALSE_WORDS:
            return False
        raise ImproperlyConfigured(
            f"{name}={value!r} is not a boolean; use one of true/false, yes/no, on/off, 1/0."
        )

    def int(
        self, name: str, default: int, *, minimum: int | None = None, maximum: int | None = None
    ) -> int:
        value = self._raw(name)
        if value is None:
            return default
        try:
            number = int(value)
        except ValueError:
            raise ImproperlyConfigured(f"{name}={value!r} is not a whole number.") from None
        if minimum is not None and number < minimum:
            raise ImproperlyConfigured(f"{name}={number} is too small; the minimum is {minimum}.")
        if maximum is not None and number > maximum:
            raise ImproperlyConfigured(f"{name}={number} is too large; the maximum is {maximum}.")
        return number

    def price(self, name: str, default: str) -> str:
        """A non-negative amount of money such as ``0.0125`` (kept as text for Decimal)."""
        value = self._raw(name)
        if value is None:
            return default
        try:
            number = float(value)
        except ValueError:
            number = -1.0
        if not 0 <= number < 1_000_000 or value.strip().lower() in ("nan", "inf", "infinity"):
            raise ImproperlyConfigured(
                f"{name}={value!r} is not an amount of money; use a number such as 0.01."
            )
        return value.strip()

    def list(self, name: str, default: list[str] | None = None) -> list[str]:
        """A comma-separated list; blanks are dropped."""
        value = self._raw(name)
        if value is None:
            return list(default or [])
        return [item.strip() for item in value.split(",") if item.strip()]

    def choice(self, name: str, choices: list[str], default: str) -> str:
        value = self._raw(name)
        if value is None:
            return default
        for choice in choices:
            if value.lower() == choice.lower():
                return choice
        raise ImproperlyConfigured(f"{name}={value!r} is not one of: {', '.join(choices)}.")

    def secret(self, name: str, default: str = "") -> str:
        """A secret from ``NAME`` or, when unset, from the file named by ``NAME_FILE``."""
        value = self._raw(name)
        if value is not None:
            return value
        file_name = self._raw(f"{name}_FILE")
        if file_name is None:
            return default
        try:
            content = Path(file_name).read_text().strip()
        except OSError as exc:
            raise ImproperlyConfigured(
                f"{name}_FILE={file_name!r} cannot be read ({exc.strerror}); "
                f"point it at a readable file or set {name} instead."
            ) from None
        if not content:
            raise ImproperlyConfigured(f"{name}_FILE={file_name!r} is empty.")
        return content

    def mapping(self, name: str, choices: list[str]) -> dict[str, str]:
        """``key=value`` pairs separated by commas, each value one of ``choices``."""
        result: dict[str, str] = {}
        for item in self.list(name):
            key, sep, value = item.partition("=")
            if not sep or not key.strip() or not value.strip():
                raise ImproperlyConfigured(
                    f"{name}: {item!r} is not of the form key=value (e.g. ops@example.com=Operator)."
                )
            matched = [choice for choice in choices if choice.lower() == value.strip().lower()]
            if not matched:
                raise ImproperlyConfigured(
                    f"{name}: {value.strip()!r} in {item!r} is not one of: {', '.join(choices)}."
                )
            result[key.strip().lower()] = matched[0]
        return result


def database_from_url(url: str, name: str = "DATABASE_URL") -> dict:
    """Django's ``DATABASES['default']`` from a ``postgresql://`` URL (``?host=/dir`` for sockets)."""
    import dj_database_url

    if not url.startswith(("postgres://", "postgresql://")):
        raise ImproperlyConfigured(
            f"{name} must be a PostgreSQL URL like postgresql://user:password@host:5432/dbname; "
            f"got a {url.split(':', 1)[0]!r} URL."
        )
    # No persistent connections: under ASGI each request runs in a thread of its own, so a kept
    # connection is never reused and bursts pile them up until PostgreSQL refuses clients.
    config = dj_database_url.parse(url, conn_max_age=0, conn_health_checks=True)
    options = config.setdefault("OPTIONS", {})
    # Fail fast when the server does not answer, so /healthz reports it instead of hanging.
    options.setdefault("connect_timeout", 5)
    if "host" in options:  # a Unix-socket directory given as ?host=
        config["HOST"] = options.pop("host")
    if not config.get("NAME"):
        raise ImproperlyConfigured(f"{name} names no database; add /dbname to the URL.")
    return config


def validate_redis_url(url: str, name: str = "REDIS_URL") -> str:
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise ImproperlyConfigured(
            f"{name} must be a Redis URL like redis://host:6379/0; got {url.split(':', 1)[0]!r}."
        )
    return url
