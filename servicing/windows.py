"""Maintenance windows: when upgrades may run. The only way to change one (Admin, validated,
audited), and the question every upgrade asks: is an agent's window open now, and if not, when
does it open next?

A window opens at each time its cron expression names, in its own time zone (so "0 2 * * *" in
Europe/Paris is 02:00 Paris time across daylight saving changes), and stays open for its
duration. Deny windows win over allow windows. An agent with no allow window (of the fleet, its
tier or its own) may be upgraded whenever no deny window covers the moment.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import Q

from agents.choices import Tier
from agents.models import Agent
from portal import roles
from portal.actors import Actor
from portal.services import audits_refusals, record_audit
from servicing.models import MaintenanceWindow, WindowKind
from servicing.services import ServicingRefused

HORIZON = timedelta(days=35)
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)  # the times the doors take for "when"
LATEST = datetime(9998, 12, 31, tzinfo=UTC)
MAX_DURATION_MINUTES = 7 * 24 * 60
MAX_FIRES_PER_WINDOW = 5000
FIELDS = ("name", "kind", "cron", "duration_minutes", "timezone", "tier", "agent", "enabled",
          "reason")  # fmt: skip
_CRON_FIELD = re.compile(r"^[\d*/,\-A-Za-z?LW#]+$")


@dataclass(frozen=True)
class Opening:
    """Whether upgrades may run at the moment asked about; else when they may next."""

    open: bool
    starts_at: datetime | None  # None when open, or when nothing opens within the horizon
    window: MaintenanceWindow | None  # the window that decides
    explanation: str

    def to_dict(self) -> dict:
        return {
            "open": self.open,
            "starts_at": self.starts_at,
            "window": self.window.name if self.window else None,
            "explanation": self.explanation,
        }


# --- checking ------------------------------------------------------------------------------------


def _refuse(field: str, message: str) -> ServicingRefused:
    return ServicingRefused(f"{field}: {message}", "invalid")


def _text(value: object, field: str, limit: int, *, required: bool = False) -> str:
    if value is None:
        value = ""
    if not isinstance(value, str) or "\x00" in value:
        raise _refuse(field, "must be text (without NUL bytes).")
    value = value.strip()
    if required and not value:
        raise _refuse(field, "is required.")
    if len(value) > limit:
        raise _refuse(field, f"is longer than {limit} characters.")
    return value


def check_cron(value: object) -> str:
    text = _text(value, "cron", 100, required=True)
    parts = text.split()
    if len(parts) != 5 or not all(_CRON_FIELD.match(part) for part in parts):
        raise _refuse("cron", f"{text[:60]!r} is not five fields (minute hour day month weekday), "
                      "e.g. '0 2 * * *' for 02:00 every day.")  # fmt: skip
    if not croniter.is_valid(text):
        raise _refuse("cron", f"{text[:60]!r} does not parse; e.g. '0 2 * * 6' for Saturdays at "
                      "02:00.")  # fmt: skip
    return text


def check_timezone(value: object) -> str:
    text = _text(value, "timezone", 64) or "UTC"
    try:
        ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError):
        raise _refuse("timezone", f"{text[:64]!r} is not a time zone; use an IANA name such as "
                      "Europe/Paris or UTC.") from None  # fmt: skip
    return text


def check_duration(value: object) -> int:
    text = str(value).strip() if value is not None and not isinstance(value, bool) else ""
    if not (text.isascii() and text.isdecimal()) or not 1 <= int(text) <= MAX_DURATION_MINUTES:
        raise _refuse("duration_minutes", f"must be a whole number of minutes from 1 to "
                      f"{MAX_DURATION_MINUTES} (a week), not {text[:20]!r}.")  # fmt: skip
    return int(text)


def _clean(values: dict) -> dict:
    cleaned: dict = {}
    if "name" in values:
        cleaned["name"] = _text(values["name"], "name", 100, required=True)
    if "kind" in values:
        if values["kind"] not in WindowKind.values:
            raise _refuse("kind", f"use {' or '.join(WindowKind.values)}.")
        cleaned["kind"] = values["kind"]
    if "cron" in values:
        cleaned["cron"] = check_cron(values["cron"])
    if "duration_minutes" in values:
        cleaned["duration_minutes"] = check_duration(values["duration_minutes"])
    if "timezone" in values:
        cleaned["timezone"] = check_timezone(values["timezone"])
    if "tier" in values:
        tier = _text(values["tier"], "tier", 20)
        if tier and tier not in Tier.values:
            raise _refuse("tier", f"{tier!r} is not a tier; use {', '.join(Tier.values)}.")
        cleaned["tier"] = tier
    if "agent" in values:
        slug = _text(values["agent"], "agent", 63)
        agent = Agent.objects.filter(slug=slug).first() if slug else None
        if slug and agent is None:
            raise _refuse("agent", f"there is no agent {slug!r}.")
        cleaned["agent"] = agent
    if "enabled" in values:
        if not isinstance(values["enabled"], bool):
            raise _refuse("enabled", "must be true or false.")
        cleaned["enabled"] = values["enabled"]
    if "reason" in values:
        cleaned["reason"] = _text(values["reason"], "reason", 2000)
    unknown = sorted(set(values) - set(FIELDS))
    if unknown:
        raise _refuse(str(unknown[0])[:40], f"is not a window field; fields: {', '.join(FIELDS)}.")
    return cleaned


def _describe(window: MaintenanceWindow) -> dict:
    return {
        "name": window.name, "kind": window.kind, "cron": window.cron,
        "duration_minutes": window.duration_minutes, "timezone": window.timezone,
        "scope": window.scope_label, "enabled": window.enabled,
    }  # fmt: skip


# --- changing ------------------------------------------------------------------------------------


def get_window(window_id: object) -> MaintenanceWindow:
    text = str(window_id).strip()
    window = None
    if text.isascii() and text.isdecimal() and len(text) <= 18:
        window = MaintenanceWindow.objects.select_related("agent").filter(pk=int(text)).first()
    if window is None:
        raise ServicingRefused(
            f"There is no window {text[:40].replace(chr(0), '')!r}; `manage.py servicing windows "
            "list` lists them.",
            "not_found",
        )
    return window


@audits_refusals("servicing.window.create")
def create_window(actor: Actor, **values) -> MaintenanceWindow:
    """A new window (Admin). Every field is checked first; the refusal names the field."""
    actor.require(roles.MANAGE, "change maintenance windows")
    for required in ("name", "cron", "duration_minutes"):
        if required not in values:
            raise _refuse(required, "is required.")
    cleaned = _clean(values)
    if cleaned.get("agent") is not None and cleaned.get("tier"):
        raise _refuse("agent", "a window is for one agent or one tier, not both; leave one out.")
    with transaction.atomic():
        window = MaintenanceWindow.objects.create(created_by=actor.label[:200], **cleaned)
        record_audit(actor, "servicing.window.create", target=f"window:{window.pk}",
                     **_describe(window))  # fmt: skip
    return window


@audits_refusals("servicing.window.update", target="window")
def update_window(actor: Actor, window: MaintenanceWindow, **values) -> MaintenanceWindow:
    actor.require(roles.MANAGE, "change maintenance windows")
    cleaned = _clean(values)
    with transaction.atomic():
        locked = MaintenanceWindow.objects.select_for_update().get(pk=window.pk)
        before = _describe(locked)
        for name, value in cleaned.items():
            setattr(locked, name, value)
        if locked.agent_id is not None and locked.tier:
            raise _refuse("agent", "a window is for one agent or one tier, not both.")
        locked.save()
        record_audit(actor, "servicing.window.update", target=f"window:{locked.pk}",
                     before=before, after=_describe(locked))  # fmt: skip
    return locked


@audits_refusals("servicing.window.delete", target="window")
def delete_window(actor: Actor, window: MaintenanceWindow, reason: object = "") -> None:
    actor.require(roles.MANAGE, "change maintenance windows")
    why = _text(reason, "reason", 2000)
    with transaction.atomic():
        described = _describe(window)
        MaintenanceWindow.objects.filter(pk=window.pk).delete()
        record_audit(actor, "servicing.window.delete", target=f"window:{window.pk}",
                     reason=why, **described)  # fmt: skip


# --- asking ---------------------------------------------------------------------------------------


def _applying_to(agent: Agent) -> Q:
    return Q(agent__isnull=True, tier="") | Q(agent=agent) | Q(agent__isnull=True, tier=agent.tier)


def windows_for(agent: Agent) -> list[MaintenanceWindow]:
    """The enabled windows that apply to ``agent``: the fleet's, its tier's and its own."""
    return list(
        MaintenanceWindow.objects.filter(_applying_to(agent), enabled=True).select_related("agent")
    )


def list_windows(
    actor: Actor, agent: Agent | None = None, tier: object = None
) -> list[MaintenanceWindow]:
    """Every window, enabled or not (any role); with ``agent``, those that apply to it (the
    fleet's, its tier's, its own); with ``tier``, the fleet's and that tier's."""
    if not actor.has(roles.VIEW):
        raise PermissionDenied("You need a role to see maintenance windows. Ask an Admin.")
    found = MaintenanceWindow.objects.select_related("agent")
    if agent is not None and tier is not None:
        raise _refuse("tier", "filter by agent or by tier, not both.")
    if agent is not None:
        found = found.filter(_applying_to(agent))
    if tier is not None:
        chosen = _text(tier, "tier", 20, required=True)
        if chosen not in Tier.values:
            raise _refuse("tier", f"{chosen!r} is not a tier; use {', '.join(Tier.values)}.")
        found = found.filter(agent__isnull=True, tier__in=["", chosen])
    return list(found)


def parse_moment(value: object, field: str = "at") -> datetime:
    """An ISO 8601 time with its offset (``2026-12-05T02:00:00+01:00``, ``...Z``), in UTC: what
    the doors take for "when" (a query string may have turned the offset's ``+`` into a space)."""
    text = _text(value, field, 40, required=True)
    moment = None
    for candidate in (text, text[:-6] + "+" + text[-5:] if text[-6:-5] == " " else text):
        try:
            moment = datetime.fromisoformat(candidate)
            break
        except ValueError:
            continue
    if moment is None:
        raise _refuse(field, f"{text!r} is not a time; use ISO 8601 with an offset, e.g. "
                      "2026-12-05T02:00:00+01:00 or 2026-12-05T01:00:00Z.")  # fmt: skip
    if moment.tzinfo is None:
        raise _refuse(field, f"{text!r} has no offset; add one (+01:00, or Z for UTC).")
    try:
        moment = moment.astimezone(UTC)
    except OverflowError:
        moment = datetime.min.replace(tzinfo=UTC)
    if not EARLIEST <= moment <= LATEST:  # openings are looked for up to 35 days after it
        raise _refuse(field, f"{text!r} is out of range; give a time from {EARLIEST.year} to "
                      f"{LATEST.year}.")  # fmt: skip
    return moment


def _zone(window: MaintenanceWindow) -> ZoneInfo:
    return ZoneInfo(window.timezone)


def _last_opening(window: MaintenanceWindow, at: datetime) -> datetime:
    """The latest time at or before ``at`` the window opened (UTC)."""
    local = at.astimezone(_zone(window)) + timedelta(seconds=1)
    return croniter(window.cron, local).get_prev(datetime).astimezone(UTC)


def covers(window: MaintenanceWindow, at: datetime) -> bool:
    opened = _last_opening(window, at)
    return opened <= at < opened + timedelta(minutes=window.duration_minutes)


def _openings(window: MaintenanceWindow, after: datetime, until: datetime):
    """The times the window opens after ``after`` and before ``until`` (UTC)."""
    fires = croniter(window.cron, after.astimezone(_zone(window)))
    for _ in range(MAX_FIRES_PER_WINDOW):
        fire = fires.get_next(datetime).astimezone(UTC)
        if fire >= until:
            return
        yield fire


def _state(allows, denies, at: datetime) -> tuple[bool, MaintenanceWindow | None]:
    deny = next((w for w in denies if covers(w, at)), None)
    if deny is not None:
        return False, deny
    if not allows:
        return True, None
    allow = next((w for w in allows if covers(w, at)), None)
    return allow is not None, allow


def next_opening(agent: Agent, at: datetime) -> Opening:
    """Whether ``agent`` may be upgraded at ``at``; if not, the next time it may (within 35
    days), with the window that decides and a sentence a person reads."""
    if at.tzinfo is None:
        raise ValueError("next_opening needs an aware datetime (timezone.now(), say).")
    at = at.astimezone(UTC).replace(microsecond=0)
    windows = windows_for(agent)
    allows = [w for w in windows if w.kind == WindowKind.ALLOW]
    denies = [w for w in windows if w.kind == WindowKind.DENY]
    is_open, deciding = _state(allows, denies, at)
    if not is_open and deciding is None and allows:
        deciding = allows[0]  # closed because no allow window covers the moment
    if is_open:
        why = f"inside the allow window {_label(deciding)}" if deciding else "no window applies"
        return Opening(True, None, deciding, why)
    until = at + HORIZON
    candidates: set[datetime] = set()
    for window in allows:
        candidates.update(_openings(window, at, until))
    for window in denies:  # a deny window's end may let an allow window that is open through
        if covers(window, at):
            opened = _last_opening(window, at)
            candidates.add(opened + timedelta(minutes=window.duration_minutes))
        for fire in _openings(window, at, until):
            candidates.add(fire + timedelta(minutes=window.duration_minutes))
    for moment in sorted(candidates):
        if moment <= at or moment >= until:
            continue
        is_open, opener = _state(allows, denies, moment)
        if is_open:
            return Opening(False, moment, opener or deciding, _outside(deciding, moment, opener))
    return Opening(
        False, None, deciding,
        f"{_why_closed(deciding)}, and no window opens in the next {HORIZON.days} days",
    )  # fmt: skip


def _label(window: MaintenanceWindow | None) -> str:
    if window is None:
        return ""
    return (f"'{window.name}' ({window.cron} {window.timezone}, {window.duration_minutes} min, "
            f"{window.scope_label})")  # fmt: skip


def _why_closed(window: MaintenanceWindow | None) -> str:
    if window is not None and window.kind == WindowKind.DENY:
        return f"inside the deny window {_label(window)}"
    if window is not None:
        return f"outside the allow window {_label(window)}"
    return "outside every allow window"


def _outside(deciding, moment: datetime, opener) -> str:
    zone = _zone(opener) if opener is not None else (_zone(deciding) if deciding else UTC)
    local = moment.astimezone(zone)
    via = f" ({_label(opener)})" if opener is not None and opener != deciding else ""
    return f"{_why_closed(deciding)}; next opening {local:%Y-%m-%d %H:%M %Z}{via}"
