"""Service functions of the portal app: the audit trail, API tokens, roles and the first admin.

Views, the API, the admin and management commands all call these, so permission checks and
audit entries happen in one place whatever the door.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import logging
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.utils import timezone

from portal import roles
from portal.actors import Actor
from portal.models import ApiToken, AuditEntry
from portal.refusals import Refused

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractUser

logger = logging.getLogger(__name__)

TOKEN_PREFIX = "wao"
LAST_USED_RESOLUTION = timedelta(seconds=60)


# --- audit ------------------------------------------------------------------------------


def record_audit(
    actor: Actor,
    action: str,
    *,
    target: str = "",
    outcome: str = AuditEntry.Outcome.SUCCESS,
    **detail: object,
) -> AuditEntry:
    """Append one audit entry. Call it inside the transaction of the change it records."""
    # What a caller builds from input ("bulk.<action>", a target it was given) may be longer
    # than the columns: the entry is kept, cut to fit, rather than lost with the request.
    entry = AuditEntry.objects.create(
        door=actor.door,
        app=action.split(".", 1)[0][:40],
        actor=actor.label[:200],
        user=actor.user if actor.user is not None and actor.user.pk else None,
        action=action[:100],
        target=target[:200],
        source=actor.source[:200],
        outcome=outcome,
        detail=detail,
    )
    logger.info(
        "audit %s %s %s", action, target, outcome, extra={"actor": actor.label, "action": action}
    )
    return entry


@contextmanager
def refusals_audited(
    actor: Actor, action: str, *, target: str = "", **detail: object
) -> Iterator[None]:
    """Within it, a refusal (a missing role, or a service's ``Refused``) is audited as one,
    ``outcome=refused`` with its sentence, and raised again. Open it outside the change's
    transaction: an entry written inside one that the refusal rolls back would go with it."""
    try:
        yield
    except (PermissionDenied, Refused) as refused:
        record_audit(
            actor, action, target=target, outcome=AuditEntry.Outcome.REFUSED,
            error=getattr(refused, "message", str(refused)), **detail,
        )  # fmt: skip
        raise


F = TypeVar("F", bound=Callable[..., Any])


def audits_refusals(action: str, *, target: str = "") -> Callable[[F], F]:
    """Decorate a service function taking an ``actor``: a refusal for its role is audited as
    ``action`` (``outcome=refused``; ``{name}`` in it is that argument, ``queues.{mode}``), the
    target read from its argument named ``target`` (an object's slug or key, or the value;
    ``diagnosis.customer`` follows attributes).
    For functions whose refusals are not audited inside; input it refuses changes nothing and
    is answered at the door, unaudited, as before."""

    def decorate(function: F) -> F:
        signature = inspect.signature(function)

        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return function(*args, **kwargs)
            except PermissionDenied as refused:
                # The call is read only now: a call that is let through pays nothing for this.
                bound = signature.bind_partial(*args, **kwargs)
                bound.apply_defaults()
                arguments = bound.arguments
                head, *path = target.split(".") if target else ("",)
                value = arguments.get(head) if head else None
                for name in path:
                    value = getattr(value, name, None)
                named = getattr(value, "slug", None) or getattr(value, "key", None) or value or ""
                shown = {key: str(arg)[:40].replace("\x00", "") for key, arg in arguments.items()}
                record_audit(
                    arguments["actor"], action.format(**shown),
                    target=str(named)[:200].replace("\x00", ""),
                    outcome=AuditEntry.Outcome.REFUSED, error=str(refused),
                )  # fmt: skip
                raise

        return wrapper  # type: ignore[return-value]

    return decorate


# --- API tokens -------------------------------------------------------------------------


class TokenError(Exception):
    """A bearer token that cannot be used, with the reason and what to do."""


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_api_token(
    user: AbstractUser, actor: Actor, *, name: str = "", expires_in_days: int | None = None
) -> tuple[ApiToken, str]:
    """Create a token for ``user``; returns the record and the token text, shown only now."""
    with refusals_audited(actor, "api_token.create", target=f"for {user.get_username()}"):
        actor.require(roles.MANAGE, "create API tokens")
    if not user.is_active:
        raise ValueError(f"{user.get_username()} is deactivated; activate the user first.")
    if expires_in_days is not None and expires_in_days < 1:
        raise ValueError("A token must live at least one day; leave the expiry out for no expiry.")
    prefix = secrets.token_hex(4)
    text = f"{TOKEN_PREFIX}_{prefix}_{secrets.token_urlsafe(32)}"
    expires_at = timezone.now() + timedelta(days=expires_in_days) if expires_in_days else None
    with transaction.atomic():
        token = ApiToken.objects.create(
            user=user,
            name=name,
            prefix=prefix,
            digest=_digest(text),
            expires_at=expires_at,
            created_by=actor.user if actor.user is not None and actor.user.pk else None,
        )
        record_audit(
            actor, "api_token.create", target=f"{prefix} for {user.get_username()}", name=name
        )
    return token, text


def revoke_api_token(token: ApiToken, actor: Actor) -> bool:
    """Revoke a token; returns False when it was already revoked (nothing changes then)."""
    with refusals_audited(actor, "api_token.revoke", target=token.prefix):
        actor.require(roles.MANAGE, "revoke API tokens")
    with transaction.atomic():
        token = ApiToken.objects.select_for_update().get(pk=token.pk)
        if token.revoked_at is not None:
            return False
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])
        record_audit(
            actor, "api_token.revoke", target=f"{token.prefix} for {token.user.get_username()}"
        )
    return True


def find_api_token(prefix_or_text: str) -> ApiToken:
    """The token named by its prefix (``1a2b3c4d``) or its full text."""
    value = prefix_or_text.strip()
    if value.startswith(f"{TOKEN_PREFIX}_"):
        parts = value.split("_")
        value = parts[1] if len(parts) >= 2 else value
    try:
        return ApiToken.objects.select_related("user").get(prefix=value)
    except ApiToken.DoesNotExist:
        raise TokenError(
            f"No API token with prefix {value!r}; `api_token list` shows them."
        ) from None


def authenticate_token(text: str) -> ApiToken:
    """The active token with this text, or ``TokenError`` saying why it cannot be used."""
    try:
        token = ApiToken.objects.select_related("user").get(digest=_digest(text))
    except ApiToken.DoesNotExist:
        raise TokenError(
            "This API token is not valid. Check it was copied whole, or create a new one."
        ) from None
    if token.is_revoked:
        raise TokenError("This API token was revoked. Ask an Admin for a new one.")
    if token.is_expired:
        raise TokenError("This API token has expired. Ask an Admin for a new one.")
    if not token.user.is_active:
        raise TokenError("The user of this API token is deactivated.")
    now = timezone.now()
    if token.last_used_at is None or now - token.last_used_at > LAST_USED_RESOLUTION:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
        token.last_used_at = now
    return token


# --- users and roles --------------------------------------------------------------------


def assign_role(user: AbstractUser, role: str, actor: Actor) -> None:
    """Give ``user`` exactly ``role``."""
    with refusals_audited(actor, "user.role", target=user.get_username(), role=role):
        actor.require(roles.MANAGE, "change roles")
    with transaction.atomic():
        roles.set_role(user, role)
        record_audit(actor, "user.role", target=user.get_username(), role=role)


def ensure_admin_user(actor: Actor) -> tuple[AbstractUser | None, str | None]:
    """Make sure someone can sign in as an Admin.

    With ``PORTAL_ADMIN_EMAIL`` and ``PORTAL_ADMIN_PASSWORD`` set, that local user is created or
    updated with the Admin role. Without them, on a first start (no Admin exists yet) an
    ``admin`` user is created with a generated password, returned so it can be printed once.
    Returns the user changed (or None) and the generated password (or None).
    """
    with refusals_audited(actor, "user.bootstrap_admin"):
        actor.require(roles.MANAGE, "create the first Admin")
    User = get_user_model()
    roles.ensure_roles()
    email = settings.PORTAL_ADMIN_EMAIL
    if email:
        with transaction.atomic():
            user, created = User.objects.get_or_create(username=email, defaults={"email": email})
            user.email = email
            user.is_active = True
            user.set_password(settings.PORTAL_ADMIN_PASSWORD)
            user.save()
            roles.set_role(user, roles.ADMIN)
            record_audit(actor, "user.bootstrap_admin", target=email, created=created)
        return user, None

    has_admin = User.objects.filter(is_active=True, groups__name=roles.ADMIN).exists() or (
        User.objects.filter(is_active=True, is_superuser=True).exists()
    )
    if has_admin:
        return None, None
    password = secrets.token_urlsafe(12)
    with transaction.atomic():
        user, _ = User.objects.get_or_create(username="admin")
        user.is_active = True
        user.set_password(password)
        user.save()
        roles.set_role(user, roles.ADMIN)
        record_audit(actor, "user.bootstrap_admin", target="admin", generated_password=True)
    return user, password
