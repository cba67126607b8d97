"""The audit walk: every mutating service function, called for real, writes an audit entry.

Each app's ``test_audit_walk.py`` keeps a ``Walk`` of recipes, one per mutating function of the
app (by its dotted name, ``agents.services.registry.register_agent``): a recipe sets up what the
function needs and calls it for the actor it is given. Two tests run every recipe:

- as an Admin: the call writes at least one entry for that actor, none of them a refusal;
- as a Viewer (unless the recipe says why a Viewer may do it): the call is refused
  (``PermissionDenied`` or ``Refused``) and the refusal is in the log, ``outcome=refused``.

``tests/test_audit_coverage.py`` checks that the recipes and each file's ``NOT_WALKED`` (names
with the reason they are not actions of their own) together are exactly the mutating functions
its scan of the source finds: a new service function without a recipe fails there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
from django.core.exceptions import PermissionDenied
from django.db.models import Max

from portal.actors import Actor
from portal.models import AuditEntry
from portal.refusals import Refused


@dataclass
class Walker:
    """What a recipe gets: the pytest request (for the app's fixtures) and the three actors."""

    request: pytest.FixtureRequest
    admin: Actor
    operator: Actor
    viewer: Actor

    def fixture(self, name: str):
        return self.request.getfixturevalue(name)


Recipe = Callable[[Walker, Actor], object]


@dataclass
class Step:
    call: Recipe
    viewer_may: str  # why a Viewer is not refused, or "" when a Viewer must be


class Walk:
    """The recipes of one app: ``@walk("app.module.function")`` over ``def _(w, actor): ...``."""

    def __init__(self) -> None:
        self.steps: dict[str, Step] = {}

    def __call__(self, name: str, *, viewer_may: str = "") -> Callable[[Recipe], Recipe]:
        def register(call: Recipe) -> Recipe:
            assert name not in self.steps, f"two recipes for {name}"
            self.steps[name] = Step(call, viewer_may)
            return call

        return register

    def names(self) -> list[str]:
        return sorted(self.steps)

    def refused_names(self) -> list[str]:
        return sorted(name for name, step in self.steps.items() if not step.viewer_may)

    def tests(self) -> tuple[Callable, Callable]:
        """The app's two tests, one case a recipe:
        ``test_writes_an_audit_entry, test_a_viewers_refusal_is_audited = walk.tests()``."""

        @pytest.mark.parametrize("name", self.names())
        def test_writes_an_audit_entry(name: str, walker: Walker) -> None:
            self.writes_an_entry(name, walker)

        @pytest.mark.parametrize("name", self.refused_names())
        def test_a_viewers_refusal_is_audited(name: str, walker: Walker) -> None:
            self.refusal_is_recorded(name, walker)

        return test_writes_an_audit_entry, test_a_viewers_refusal_is_audited

    def writes_an_entry(self, name: str, walker: Walker) -> None:
        last = _last_entry()
        self.steps[name].call(walker, walker.admin)
        entries = AuditEntry.objects.filter(pk__gt=last, actor=walker.admin.label)
        assert entries.exists(), f"{name} changed things for an Admin and wrote no audit entry"
        refused = list(
            entries.filter(outcome=AuditEntry.Outcome.REFUSED).values("action", "detail")
        )
        assert not refused, f"{name} was refused for an Admin: {refused}"

    def refusal_is_recorded(self, name: str, walker: Walker) -> None:
        last = _last_entry()
        with pytest.raises((PermissionDenied, Refused)):
            self.steps[name].call(walker, walker.viewer)
        entries = AuditEntry.objects.filter(pk__gt=last, actor=walker.viewer.label)
        assert entries.filter(outcome=AuditEntry.Outcome.REFUSED).exists(), (
            f"{name} refused a Viewer and left no refused entry in the audit log"
        )
        assert not entries.exclude(outcome=AuditEntry.Outcome.REFUSED).exists(), (
            f"{name} was refused for a Viewer but audited a change"
        )


def _last_entry() -> int:
    return AuditEntry.objects.aggregate(last=Max("pk"))["last"] or 0


@pytest.fixture
def walker(request, make_user) -> Walker:
    return Walker(
        request=request,
        admin=Actor(kind="user", user=make_user("walk-admin", "Admin"), source="127.0.0.1"),
        operator=Actor(
            kind="user", user=make_user("walk-operator", "Operator"), source="127.0.0.1"
        ),
        viewer=Actor(kind="user", user=make_user("walk-viewer", "Viewer"), source="127.0.0.1"),
    )
