"""The portal's own records: API tokens and the permissions behind the three roles."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from portal.actors import Actor


class Access(models.Model):
    """Holds the portal-wide permissions that the roles are made of; it stores no rows."""

    class Meta:
        managed = False
        default_permissions = ()
        permissions = [
            ("view_portal", "Can view the portal (fleet, logs, events, metrics)"),
            ("operate_agents", "Can run lifecycle, bulk, recovery, queue and help-desk actions"),
            ("manage_platform", "Can manage users, templates, versions, settings and the admin"),
            ("view_secrets", "Can see secret configuration values"),
        ]

    def __str__(self) -> str:
        return "portal access"


class ApiTokenQuerySet(models.QuerySet):
    def active(self) -> ApiTokenQuerySet:
        now = timezone.now()
        return self.filter(revoked_at__isnull=True).filter(
            models.Q(expires_at__isnull=True) | models.Q(expires_at__gt=now)
        )


class ApiToken(models.Model):
    """A bearer token for automation. It acts as its user, with that user's role.

    Only a SHA-256 digest of the secret is stored; the token itself is shown once, when created.
    """

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    name = models.CharField(max_length=100, blank=True, help_text="What the token is for.")
    prefix = models.CharField(
        max_length=16, unique=True, help_text="The public start of the token, to recognise it."
    )
    digest = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    expires_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    objects = ApiTokenQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API token"

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.user})"

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None

    @property
    def is_expired(self) -> bool:
        return self.expires_at is not None and self.expires_at <= timezone.now()


class AuditEntry(models.Model):
    """One mutation anyone made through any door: who, what, when, from where, outcome.

    Append-only: a database trigger refuses every UPDATE and DELETE (migration 0002), save the
    user column set to NULL when that user is deleted and the retention purge, which says so
    (``portal.audit.retention``). Full-text search reads a generated ``search`` column that the
    model does not declare (PostgreSQL fills it; ``portal.audit.queries`` matches it)."""

    class Outcome(models.TextChoices):
        SUCCESS = "success"
        REFUSED = "refused"
        FAILED = "failed"

    class Door(models.TextChoices):
        PAGE = "page"
        API = "api"
        ADMIN = "admin"
        COMMAND = "command"
        SYSTEM = "system"

    at = models.DateTimeField(default=timezone.now)
    door = models.CharField(max_length=10, choices=Door.choices, default=Door.SYSTEM)
    app = models.CharField(max_length=40, blank=True, help_text="The action's namespace")
    actor = models.CharField(
        max_length=200, help_text="user:<name>, token:<prefix>, command, system"
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    action = models.CharField(max_length=100)
    target = models.CharField(max_length=200, blank=True)
    source = models.CharField(max_length=200, blank=True, help_text="IP address, command or task")
    outcome = models.CharField(max_length=10, choices=Outcome.choices)
    detail = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-at", "-id"]
        verbose_name_plural = "audit entries"
        indexes = [
            # Keyset paging, newest first, alone or within one filter.
            models.Index(fields=["-at", "-id"], name="audit_at_id"),
            models.Index(fields=["user", "-at", "-id"], name="audit_user_at"),
            models.Index(fields=["actor", "-at", "-id"], name="audit_actor_at"),
            models.Index(fields=["action", "-at", "-id"], name="audit_action_at"),
            models.Index(fields=["target", "-at", "-id"], name="audit_target_at"),
            models.Index(fields=["app", "-at", "-id"], name="audit_app_at"),
            models.Index(fields=["outcome", "-at", "-id"], name="audit_outcome_at"),
            models.Index(fields=["door", "-at", "-id"], name="audit_door_at"),
        ]

    def __str__(self) -> str:
        return (
            f"{self.at:%Y-%m-%d %H:%M:%S} {self.actor} {self.action} {self.target} {self.outcome}"
        )


# --- who asked ------------------------------------------------------------------------------


class ActorKind(models.TextChoices):
    USER = "user"
    TOKEN = "token"
    COMMAND = "command"
    SYSTEM = "system"


class ActorStamped(models.Model):
    """Who asked for a record (a transition, an operation, a bulk job, a recovery...): stamped
    once from the ``Actor`` of the request, and turned back into one for the worker that carries
    the work out later on their behalf."""

    actor_kind = models.CharField(max_length=10, choices=ActorKind.choices)
    actor = models.CharField(max_length=200)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    class Meta:
        abstract = True

    @staticmethod
    def stamp(actor: Actor) -> dict:
        """The three fields for ``objects.create(**ActorStamped.stamp(actor), ...)``."""
        kind = actor.kind if actor.kind in ("user", "token", "command") else ActorKind.SYSTEM
        user = actor.user if actor.user is not None and actor.user.pk else None
        return {"actor_kind": kind, "actor": actor.label, "user": user}

    @property
    def requested_by(self) -> Actor:
        """The actor this record was asked for by, acting again from a worker."""
        if self.actor_kind == ActorKind.SYSTEM:
            return Actor.system(self.actor.removeprefix("system:"))
        return Actor(
            kind=self.actor_kind, user=self.user, source="worker", recorded_label=self.actor
        )


# --- who is signed in where -----------------------------------------------------------------


class UserSessionQuerySet(models.QuerySet):
    def live(self) -> UserSessionQuerySet:
        """Only the sessions Django still holds and has not expired: a row outlives its session
        when that expires or is cleared without a sign-out."""
        from django.contrib.sessions.models import Session

        return self.filter(
            models.Exists(
                Session.objects.filter(
                    session_key=models.OuterRef("session_key"), expire_date__gt=timezone.now()
                )
            )
        )


class UserSession(models.Model):
    """One browser session of a user: where and when it signed in and was last seen.

    Django's database sessions cannot be listed by user without decoding each one, so this row
    is kept beside each: written at sign-in, removed at sign-out (``portal.profile.sessions``),
    its ``last_seen_at`` moved on at most once a minute by the request middleware. A session
    that began before these rows existed gets one at its next request (``created_at`` is then
    when it was first seen). The session key is the cookie's secret: never shown, never sent.
    """

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="portal_sessions"
    )
    session_key = models.CharField(max_length=40, unique=True)
    created_at = models.DateTimeField(default=timezone.now)
    last_seen_at = models.DateTimeField(default=timezone.now)
    ip = models.CharField(max_length=64, blank=True, help_text="The address it was last seen at")
    user_agent = models.CharField(max_length=300, blank=True)
    signed_in_with = models.CharField(
        max_length=100, blank=True, help_text="The authentication backend of the sign-in"
    )

    objects = UserSessionQuerySet.as_manager()

    class Meta:
        ordering = ["-last_seen_at", "-id"]
        verbose_name = "user session"
        indexes = [models.Index(fields=["user", "-last_seen_at"], name="user_session_seen")]

    def __str__(self) -> str:
        return f"{self.user} from {self.ip or 'an unknown address'} since {self.created_at:%Y-%m-%d %H:%M}"
