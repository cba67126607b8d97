"""Your profile's services: who you are and where your role comes from, your own API tokens,
and signing out your other sessions.

Every door (the page, ``/api/platform/me/...``) calls these with the request's ``Actor``. They
act on the actor's own user only: there is no argument naming another user, so no door can
reach someone else's tokens or sessions. Changes and refusals are audited.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.sessions.models import Session
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.utils import timezone
from social_django.models import UserSocialAuth

from portal import roles, services
from portal.models import ApiToken, AuditEntry, UserSession
from portal.profile.sessions import describe_backend, describe_browser
from portal.refusals import BadRequest, Refused

if TYPE_CHECKING:
    from django.contrib.auth.models import User

    from portal.actors import Actor

MAX_ACTIVE_TOKENS = 10  # a person's active tokens, however made (their own or an Admin's)
MAX_EXPIRY_DAYS = 365
NAME_LENGTH: int = ApiToken._meta.get_field("name").max_length or 100
ROLE_ACTIONS = ("user.role", "user.bootstrap_admin")


class ProfileRefused(Refused):
    """What your profile will not do for you; the status says which kind (404, 403, 409)."""

    status_by_code = {"not_found": 404, "forbidden": 403, "unavailable": 503}


class BadTokenInput(BadRequest):
    """A token's name or expiry the portal cannot use (400); ``field`` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message, "invalid", details={"field": field})
        self.field = field


# --- who you are ------------------------------------------------------------------------------


@dataclass(frozen=True)
class RoleOrigin:
    """Where a role comes from: ``kind`` is google, admin, command, bootstrap, superuser,
    direct (no audited assignment names it) or none; ``sentence`` says it to a person."""

    kind: str
    sentence: str
    at: datetime | None = None
    by: str = ""
    rule: str = ""


def google_rule_for(email: str) -> str:
    """Which of the Google sign-in settings maps ``email`` to a role, in words
    (``roles.role_for_email`` applies the same order: exact email, domain, default)."""
    email = email.strip().lower()
    domain = email.rpartition("@")[2]
    if email in settings.ROLE_RULES:
        return f"the rule for {email} in ROLE_RULES ({settings.ROLE_RULES[email]})"
    if domain and domain in settings.ROLE_RULES:
        return f"the rule for the domain {domain} in ROLE_RULES ({settings.ROLE_RULES[domain]})"
    return f"DEFAULT_ROLE ({settings.DEFAULT_ROLE}), as no rule in ROLE_RULES names you"


def role_origin(user: User) -> RoleOrigin:
    """Where ``user``'s role comes from, read from the audit log's last role assignment."""
    role = roles.role_of(user)
    if user.is_superuser:
        return RoleOrigin(
            "superuser", "You are a superuser, which makes you an Admin whatever your groups."
        )
    if role is None:
        return RoleOrigin("none", "Nobody has given you a role yet. Ask an Admin for one.")
    entry = (
        AuditEntry.objects.filter(
            target=user.get_username(), action__in=ROLE_ACTIONS, outcome="success"
        )
        .order_by("-at", "-id")
        .first()
    )
    assigned = (
        roles.ADMIN if entry is not None and entry.action == "user.bootstrap_admin" else None
    ) or (entry.detail.get("role") if entry is not None else None)
    if entry is None or assigned != role:
        return RoleOrigin(
            "direct",
            f"You are in the {role} group, set outside the portal's role actions (the Django "
            "admin's user form, say), so no audit entry names who gave it.",
        )
    when = f"{entry.at:%Y-%m-%d %H:%M} UTC"
    if entry.actor == "system:google-sign-in":
        rule = google_rule_for(user.email)
        return RoleOrigin(
            "google",
            f"Given when you first signed in with Google, on {when}, by the sign-in rules: "
            f"{rule} as they read now.",
            at=entry.at,
            by="Google sign-in",
            rule=rule,
        )
    if entry.action == "user.bootstrap_admin":
        return RoleOrigin(
            "bootstrap",
            f"You are the first Admin, made when the portal started ({when}; PORTAL_ADMIN_EMAIL "
            "or the generated admin user).",
            at=entry.at,
            by=entry.actor,
        )
    if entry.actor.startswith("command:"):
        return RoleOrigin(
            "command",
            f"Set on {when} from the server's command line ({entry.actor}).",
            at=entry.at,
            by=entry.actor,
        )
    who = entry.user.get_username() if entry.user is not None else entry.actor
    via = {"admin": "in the Django admin", "api": "through the API"}.get(entry.door, "")
    return RoleOrigin(
        "admin",
        f"Given by the Admin {who}{' ' + via if via else ''} on {when}.",
        at=entry.at,
        by=who,
    )


def sign_in_methods(user: User) -> list[str]:
    """The ways ``user`` can sign in: Google (with the account's address) and a password."""
    google = UserSocialAuth.objects.filter(user=user, provider="google-oauth2")
    methods = [f"Google ({uid})" for uid in google.values_list("uid", flat=True)]
    if user.has_usable_password():
        methods.append("Password")
    return methods


def _own_user(actor: Actor, doing: str) -> User:
    """The actor's own user, who must be signed in (a session or a token) with a role."""
    if actor.kind not in ("user", "token") or actor.user is None or not actor.user.is_authenticated:
        raise ProfileRefused(
            f"You cannot {doing}: only a signed-in person has a profile.", "forbidden"
        )
    actor.require(roles.VIEW, doing)
    return actor.user  # type: ignore[return-value]


def profile_of(actor: Actor) -> dict[str, Any]:
    """Who the actor is: names, sign-in methods, the role and where it comes from."""
    user = _own_user(actor, "see your profile")
    role = roles.role_of(user)
    origin = role_origin(user)
    return {
        "username": user.get_username(),
        "name": user.get_full_name(),
        "email": user.email,
        "role": role,
        "role_origin": origin,
        "may": [
            label for codename, label in _PERMISSION_WORDS if roles.role_allows(role, codename)
        ],
        "sign_in_methods": sign_in_methods(user),
        "date_joined": user.date_joined,
        "last_login": user.last_login,
        "authenticated_by": f"token {actor.token.prefix}" if actor.token is not None else "session",
    }


_PERMISSION_WORDS = [
    (roles.VIEW, "Read the fleet, logs, events, metrics, alerts and the audit log"),
    (roles.OPERATE, "Run lifecycle, bulk, recovery, queue and help-desk actions"),
    (roles.MANAGE, "Manage users, templates, versions, settings and the Django admin"),
    (roles.VIEW_SECRETS, "See secret configuration values"),
]


# --- your API tokens --------------------------------------------------------------------------


def own_tokens(actor: Actor) -> list[ApiToken]:
    """The actor's own tokens, newest first (active, expired and revoked; the last 100)."""
    user = _own_user(actor, "list your API tokens")
    return list(ApiToken.objects.filter(user=user).order_by("-created_at", "-id")[:100])


def parse_expiry(value: object) -> int:
    """Days until a new token expires, from a form's text or a JSON number: 1 to 365."""
    if isinstance(value, bool) or value is None or value == "":
        raise BadTokenInput(
            "expires_in_days",
            f"Choose when the token expires: a whole number of days from 1 to {MAX_EXPIRY_DAYS}.",
        )
    text = str(value).strip()
    if isinstance(value, float) and value.is_integer():
        text = str(int(value))
    digits = text.removeprefix("-")
    if not digits.isascii() or not digits.isdecimal():
        raise BadTokenInput(
            "expires_in_days",
            f"The expiry {text[:20]!r} is not a whole number of days; use 1 to {MAX_EXPIRY_DAYS}.",
        )
    days = int(text) if len(digits) <= 6 else MAX_EXPIRY_DAYS + 1
    if not 1 <= days <= MAX_EXPIRY_DAYS:
        raise BadTokenInput(
            "expires_in_days",
            f"A token lives 1 to {MAX_EXPIRY_DAYS} days; {text[:20]} is out of that range.",
        )
    return days


def parse_name(value: object) -> str:
    """A new token's name: what it is for, 1 to 100 printable characters."""
    if not isinstance(value, str) or not value.strip():
        raise BadTokenInput(
            "name",
            "Name the token for what it is for (a script, a pipeline), up to 100 characters.",
        )
    name = value.strip()
    if len(name) > NAME_LENGTH:
        raise BadTokenInput(
            "name", f"The name is {len(name)} characters long; keep it to {NAME_LENGTH}."
        )
    if any(not character.isprintable() for character in name):
        raise BadTokenInput("name", "The name holds control characters; use plain text.")
    return name


def _audit_refusal(actor: Actor, action: str, target: str, refused: Exception) -> None:
    with transaction.atomic():
        services.record_audit(
            actor, action, target=target, outcome=AuditEntry.Outcome.REFUSED, self_service=True,
            error=getattr(refused, "message", str(refused)),
        )  # fmt: skip


def create_own_token(
    actor: Actor, *, name: object, expires_in_days: object
) -> tuple[ApiToken, str]:
    """A token for the actor's own user, acting with their role; returns the record and the
    token's text, shown only now. Needs a signed-in session: a token may not make tokens (it
    could otherwise outlive itself), and at most ``MAX_ACTIVE_TOKENS`` may be active."""
    target = actor.user.get_username() if actor.user is not None else actor.label
    try:
        user = _own_user(actor, "create API tokens")
        if actor.kind == "token":
            raise ProfileRefused(
                "A token cannot create tokens (it could outlive itself); create one on your "
                "profile page, or through the API with your signed-in session.",
                "forbidden",
            )
        clean_name = parse_name(name)
        days = parse_expiry(expires_in_days)
        with transaction.atomic():
            # One person's creations one after another, so the limit holds under races.
            get_user_model().objects.select_for_update().filter(pk=user.pk).first()
            active = ApiToken.objects.filter(user=user).active().count()
            if active >= MAX_ACTIVE_TOKENS:
                raise ProfileRefused(
                    f"You have {active} active tokens, the most one person may have; revoke one "
                    "you no longer use first.",
                    "too_many_tokens",
                )
            return _create(user, actor, clean_name, days)
    except (Refused, PermissionDenied) as refused:
        _audit_refusal(actor, "api_token.create", target, refused)
        raise


def _create(user: User, actor: Actor, name: str, days: int) -> tuple[ApiToken, str]:
    # The same shape and digest as portal.services.create_api_token's, which Admins use.
    prefix = secrets.token_hex(4)
    text = f"{services.TOKEN_PREFIX}_{prefix}_{secrets.token_urlsafe(32)}"
    token = ApiToken.objects.create(
        user=user, name=name, prefix=prefix, digest=services._digest(text),
        expires_at=timezone.now() + timedelta(days=days), created_by=user,
    )  # fmt: skip
    services.record_audit(
        actor, "api_token.create", target=f"{token.prefix} for {user.get_username()}",
        name=name, expires_in_days=days, self_service=True,
    )  # fmt: skip
    return token, text


def revoke_own_token(actor: Actor, prefix: str) -> tuple[ApiToken, bool]:
    """Revoke one of the actor's own tokens, named by its prefix; False when it already was
    (nothing changes then). Another person's token is as unknown as one that does not exist."""
    target = f"{prefix[:16]} for {actor.user.get_username() if actor.user else actor.label}"
    try:
        user = _own_user(actor, "revoke your API tokens")
        token = ApiToken.objects.filter(user=user, prefix=prefix.strip()[:16]).first()
        if token is None:
            raise ProfileRefused(
                f"You have no API token {prefix.strip()[:16]!r}; your profile lists yours.",
                "not_found",
            )
    except (Refused, PermissionDenied) as refused:
        _audit_refusal(actor, "api_token.revoke", target, refused)
        raise
    with transaction.atomic():
        token = ApiToken.objects.select_for_update().get(pk=token.pk)
        if token.revoked_at is not None:
            return token, False
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])
        services.record_audit(
            actor, "api_token.revoke", target=f"{token.prefix} for {user.get_username()}",
            self_service=True,
        )  # fmt: skip
    return token, True


def token_status(token: ApiToken) -> str:
    return "revoked" if token.is_revoked else "expired" if token.is_expired else "active"


# --- your sessions ----------------------------------------------------------------------------


@dataclass(frozen=True)
class SessionView:
    """One session as the profile shows it (never its key)."""

    id: int
    created_at: datetime
    last_seen_at: datetime
    ip: str
    user_agent: str
    browser: str
    signed_in_with: str
    current: bool


def own_sessions(actor: Actor, current_key: str | None) -> list[SessionView]:
    """The actor's live browser sessions, the one in use (``current_key``) first."""
    user = _own_user(actor, "list your sessions")
    rows = UserSession.objects.filter(user=user).live().order_by("-last_seen_at", "-id")[:200]
    shown = [session_view(row, current_key) for row in rows]
    return sorted(shown, key=lambda session: not session.current)


def _end_sessions(rows: list[UserSession]) -> int:
    keys = [row.session_key for row in rows]
    Session.objects.filter(session_key__in=keys).delete()
    UserSession.objects.filter(pk__in=[row.pk for row in rows]).delete()
    return len(keys)


def sign_out_other_sessions(actor: Actor, current_key: str | None) -> int:
    """End every session of the actor's but the one in use (with a token: every one); returns
    how many ended. Their browsers are signed out at their next request."""
    target = actor.user.get_username() if actor.user is not None else actor.label
    try:
        user = _own_user(actor, "sign out your other sessions")
    except (Refused, PermissionDenied) as refused:
        _audit_refusal(actor, "user.sign_out_others", target, refused)
        raise
    with transaction.atomic():
        rows = list(
            UserSession.objects.select_for_update()
            .filter(user=user)
            .exclude(session_key=current_key or "")
        )
        ended = _end_sessions(rows)
        services.record_audit(
            actor, "user.sign_out_others", target=user.get_username(), sessions=ended,
            kept_this_session=bool(current_key),
        )  # fmt: skip
    return ended


def sign_out_session(actor: Actor, session_id: object, current_key: str | None) -> SessionView:
    """End one of the actor's other sessions, named by its id on the profile; returns it."""
    target = actor.user.get_username() if actor.user is not None else actor.label
    try:
        user = _own_user(actor, "sign out a session")
        text = str(session_id).strip()
        row = (
            UserSession.objects.filter(user=user, pk=int(text)).first()
            if text.isascii() and text.isdecimal() and len(text) < 19
            else None
        )
        if row is None:
            raise ProfileRefused(
                f"You have no session {text[:20]!r}; your profile lists yours.", "not_found"
            )
        if current_key and row.session_key == current_key:
            raise ProfileRefused(
                "That is the session you are using; sign out with the button in the top bar.",
                "this_session",
            )
    except (Refused, PermissionDenied) as refused:
        _audit_refusal(actor, "user.sign_out_session", target, refused)
        raise
    shown = session_view(row, current_key)
    with transaction.atomic():
        _end_sessions([row])
        services.record_audit(
            actor, "user.sign_out_session", target=user.get_username(), session=row.pk,
            ip=row.ip, browser=shown.browser,
        )  # fmt: skip
    return shown


def session_view(row: UserSession, current_key: str | None) -> SessionView:
    return SessionView(
        id=row.pk, created_at=row.created_at, last_seen_at=row.last_seen_at, ip=row.ip,
        user_agent=row.user_agent, browser=describe_browser(row.user_agent),
        signed_in_with=describe_backend(row.signed_in_with),
        current=bool(current_key) and row.session_key == current_key,
    )  # fmt: skip
