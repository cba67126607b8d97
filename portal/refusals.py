"""One base for every refusal a service gives, and the HTTP status each door answers with.

A service refuses by raising a ``Refused`` subclass with a sentence saying what was wrong and
what to do. Pages turn it into a toast or a message (``portal.htmx.refusal``), the API into a
4xx answer ``{"detail", "code"}`` (one handler in ``portal.api``), commands into exit status 2.
Nothing was changed when a refusal is raised; that is what makes it a refusal.
"""

from __future__ import annotations


class Refused(Exception):
    """Work the portal will not do, with the reason; ``status`` is the HTTP answer (4xx/503)."""

    default_status = 409
    default_code = "refused"
    # Codes answered otherwise than ``default_status``; a subclass may add its own.
    status_by_code: dict[str, int] = {"unavailable": 503}

    def __init__(self, message: str, code: str = "", *, details: dict | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.details = details or {}

    @property
    def status(self) -> int:
        return self.status_by_code.get(self.code, self.default_status)

    def __str__(self) -> str:
        return self.message


class BadRequest(Refused):
    """Input the portal cannot use (a bad filter, a malformed field): answered 400."""

    default_status = 400
    default_code = "bad_input"


class BadFilter(BadRequest):
    """A filter value that names nothing: ``'ASLEEP' is not a state; use one of ...``.

    Every door says the same sentence, prefixed with the parameter as that door spells it
    (``state=`` on a page or the API, ``--state `` in a command): ``spelled(...)``.
    """

    def __init__(
        self, field: str, value: object, noun: str, choices: list[str], *, message: str = ""
    ) -> None:
        article = "an" if noun[:1] in "aeiou" else "a"
        super().__init__(
            message or f"{value!r} is not {article} {noun}; use one of {', '.join(choices)}.",
            "invalid",
        )
        self.field = field

    def spelled(self, parameter: str) -> str:
        return f"{parameter}{self.message}"
