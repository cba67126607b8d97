"""Semantic versions of agentd ("MAJOR.MINOR.PATCH", optionally "-prerelease"): parsing,
ordering and the downgrade question. Pure: no Django, no database.

Ordering follows semver.org: numbers compare as numbers, a prerelease comes before its release
(1.1.0-rc.1 < 1.1.0), and prerelease identifiers compare one by one, numeric ones as numbers and
below alphanumeric ones. Build metadata ("+build") is not accepted: a release is named once.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

_NUMBER = r"0|[1-9]\d*"
_IDENTIFIER = r"0|[1-9]\d*|\d*[A-Za-z-][0-9A-Za-z-]*"
PATTERN = re.compile(
    rf"^(?P<major>{_NUMBER})\.(?P<minor>{_NUMBER})\.(?P<patch>{_NUMBER})"
    rf"(?:-(?P<prerelease>(?:{_IDENTIFIER})(?:\.(?:{_IDENTIFIER}))*))?$"
)
MAX_LENGTH = 50  # Agent.version's column


class VersionError(ValueError):
    """Text that is not a version; the message says what one looks like."""


@dataclass(frozen=True)
class Version:
    major: int
    minor: int
    patch: int
    prerelease: tuple[str, ...] = ()

    def __str__(self) -> str:
        text = f"{self.major}.{self.minor}.{self.patch}"
        return f"{text}-{'.'.join(self.prerelease)}" if self.prerelease else text

    @property
    def sort_key(self) -> tuple:
        # A release (no prerelease) sorts after every prerelease of the same numbers.
        if not self.prerelease:
            pre: tuple = ((1,),)
        else:
            pre = tuple(
                (0, int(part), "") if part.isdecimal() else (1, 0, part) for part in self.prerelease
            )
            pre = ((0, *pre),)
        return (self.major, self.minor, self.patch, pre)

    def __lt__(self, other: Version) -> bool:
        return self.sort_key < other.sort_key

    def __le__(self, other: Version) -> bool:
        return self.sort_key <= other.sort_key

    def __gt__(self, other: Version) -> bool:
        return self.sort_key > other.sort_key

    def __ge__(self, other: Version) -> bool:
        return self.sort_key >= other.sort_key


def parse(text: object) -> Version:
    """``text`` as a :class:`Version`; :class:`VersionError` saying what a version looks like."""
    shown = repr(text)[:60] if not isinstance(text, str) else repr(text[:60])
    if not isinstance(text, str) or len(text) > MAX_LENGTH:
        raise VersionError(f"{shown} is not a version; use MAJOR.MINOR.PATCH such as 1.2.0")
    match = PATTERN.match(text.strip())
    if match is None:
        raise VersionError(f"{shown} is not a version; use MAJOR.MINOR.PATCH such as 1.2.0")
    prerelease = match["prerelease"]
    return Version(
        int(match["major"]),
        int(match["minor"]),
        int(match["patch"]),
        tuple(prerelease.split(".")) if prerelease else (),
    )


def is_version(text: object) -> bool:
    try:
        parse(text)
    except VersionError:
        return False
    return True


def compare(a: str, b: str) -> int:
    """-1, 0 or 1 as version ``a`` is older than, the same as, or newer than ``b``."""
    left, right = parse(a).sort_key, parse(b).sort_key
    return (left > right) - (left < right)


def sort_versions(versions: Iterable[str], *, newest_first: bool = False) -> list[str]:
    """The version texts in version order (prereleases before their release)."""
    return sorted(versions, key=lambda text: parse(text).sort_key, reverse=newest_first)


def is_downgrade(current: str, target: str) -> bool:
    """Whether going from ``current`` to ``target`` goes back to an older version. A
    ``current`` that is not a version (an agent registered by hand) is never downgraded from."""
    try:
        now = parse(current)
    except VersionError:
        return False
    return parse(target) < now
