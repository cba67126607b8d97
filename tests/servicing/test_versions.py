"""Semantic versions: parsing with a sentence that says what a version looks like, ordering
(numbers as numbers, a prerelease before its release) and the downgrade question."""

from __future__ import annotations

import pytest

from servicing import versions
from servicing.versions import Version, VersionError


def test_a_version_is_parsed_into_its_parts() -> None:
    assert versions.parse("1.2.3") == Version(1, 2, 3)
    assert versions.parse("10.0.1-rc.1") == Version(10, 0, 1, ("rc", "1"))
    assert str(versions.parse("2.0.0-beta.2")) == "2.0.0-beta.2"


@pytest.mark.parametrize(
    "text",
    [
        "1.2",
        "1",
        "v1.2.0",
        "1.2.0.4",
        "01.2.0",
        "1.2.0-",
        "1.2.0+build.5",
        "",
        "1.2.x",
        "1.2.0-a..b",
    ],
)
def test_text_that_is_not_a_version_is_refused(text) -> None:
    with pytest.raises(VersionError) as refused:
        versions.parse(text)
    assert "is not a version; use MAJOR.MINOR.PATCH such as 1.2.0" in str(refused.value)


def test_the_refusal_names_the_text() -> None:
    with pytest.raises(VersionError, match=r"^'1\.2' is not a version; use MAJOR\.MINOR\.PATCH"):
        versions.parse("1.2")
    with pytest.raises(VersionError, match="is not a version"):
        versions.parse(12)
    with pytest.raises(VersionError, match="is not a version"):
        versions.parse("1." * 40 + "0")


def test_numbers_compare_as_numbers() -> None:
    assert versions.compare("1.10.0", "1.9.0") == 1
    assert versions.compare("1.9.0", "1.10.0") == -1
    assert versions.compare("2.0.0", "2.0.0") == 0
    assert versions.parse("0.9.9") < versions.parse("1.0.0")


def test_a_prerelease_comes_before_its_release() -> None:
    assert versions.compare("1.1.0-rc.1", "1.1.0") == -1
    assert versions.compare("1.1.0-rc.1", "1.0.9") == 1
    assert versions.sort_versions(
        ["1.1.0", "1.0.0", "1.1.0-rc.2", "1.1.0-rc.10", "1.1.0-alpha", "1.1.0-1", "1.1.0-rc"]
    ) == ["1.0.0", "1.1.0-1", "1.1.0-alpha", "1.1.0-rc", "1.1.0-rc.2", "1.1.0-rc.10", "1.1.0"]


def test_sorting_newest_first() -> None:
    assert versions.sort_versions(["1.0.0", "1.2.0", "1.1.0"], newest_first=True) == [
        "1.2.0",
        "1.1.0",
        "1.0.0",
    ]


def test_a_downgrade_is_going_to_an_older_version() -> None:
    assert versions.is_downgrade("1.1.0", "1.0.0")
    assert versions.is_downgrade("1.1.0", "1.1.0-rc.1")
    assert not versions.is_downgrade("1.0.0", "1.1.0")
    assert not versions.is_downgrade("1.1.0", "1.1.0")
    # An agent registered with a version that is not one is never downgraded from.
    assert not versions.is_downgrade("latest", "1.0.0")
    with pytest.raises(VersionError):
        versions.is_downgrade("1.0.0", "latest")
