"""The actions on the customer's account: extend (reset) a trial within bounds, and send a
notification email again, through Django's email backend."""

from __future__ import annotations

import smtplib
from datetime import timedelta

from django.conf import settings
from django.core.mail import send_mail
from django.db import transaction
from django.template.loader import render_to_string
from django.utils import timezone

from agents.models import Agent
from helpdesk.actions import params as p
from helpdesk.actions.base import ActionResult
from helpdesk.models import Customer, SubscriptionStatus
from helpdesk.refusals import HelpdeskRefused
from portal.actors import Actor

TRIAL_STATUSES = (SubscriptionStatus.TRIALING, SubscriptionStatus.EXPIRED)
EMAIL_KINDS = ("welcome", "trial-ending", "payment-failed", "access-granted")


# --- reset a trial -----------------------------------------------------------------------------


def _check_trial(customer: Customer, days: int) -> None:
    if customer.status not in TRIAL_STATUSES:
        raise HelpdeskRefused(
            f"{customer.company_name} is {customer.get_status_display().lower()}, not on a trial: "
            "only a trialing or expired trial can be reset.",
            "conflict",
        )
    limit = settings.HELPDESK_TRIAL_MAX_RESETS
    if customer.trial_resets >= limit:
        raise HelpdeskRefused(
            f"{customer.company_name}'s trial was reset {customer.trial_resets} time(s) already; "
            f"the limit is {limit} (HELPDESK_TRIAL_MAX_RESETS). Talk to sales about a plan.",
            "conflict",
        )


def _days(params: dict) -> int:
    return p.whole(params, "days", 1, settings.HELPDESK_TRIAL_MAX_EXTENSION_DAYS, None)


def reset_trial(
    actor: Actor, customer: Customer, agent: Agent | None, params: dict
) -> ActionResult:
    days = _days(params)
    with transaction.atomic():
        locked = Customer.objects.select_for_update().get(pk=customer.pk)
        _check_trial(locked, days)
        now = timezone.now()
        was = locked.trial_ends_at
        locked.trial_ends_at = max(now, was or now) + timedelta(days=days)
        locked.trial_resets += 1
        locked.status = SubscriptionStatus.TRIALING
        locked.save(update_fields=["trial_ends_at", "trial_resets", "status", "updated_at"])
    customer.refresh_from_db()
    ends = locked.trial_ends_at
    return ActionResult(
        "reset-trial", True,
        f"{customer.company_name}'s trial runs until {ends:%Y-%m-%d %H:%M} UTC ({days} more "
        f"day(s)); reset {locked.trial_resets} of {settings.HELPDESK_TRIAL_MAX_RESETS} time(s).",
        {"trial_ends_at": ends.isoformat(), "was": was.isoformat() if was else None,
         "trial_resets": locked.trial_resets, "status": locked.status},
    )  # fmt: skip


def describe_reset_trial(customer: Customer, agent: Agent | None, params: dict) -> str:
    days = _days(params)
    try:
        _check_trial(customer, days)
    except HelpdeskRefused as refused:
        return f"Nothing: {refused.message}"
    start = max(timezone.now(), customer.trial_ends_at or timezone.now())
    return (
        f"Extend {customer.company_name}'s trial by {days} day(s), to "
        f"{start + timedelta(days=days):%Y-%m-%d}, and mark it trialing."
    )


# --- resend an email ---------------------------------------------------------------------------


def _recipient(customer: Customer, params: dict) -> str:
    to = p.text(params, "to", limit=254).lower()
    contacts = list(customer.contacts.all())
    if not to:
        primary = next((c for c in contacts if c.primary), contacts[0] if contacts else None)
        if primary is None:
            raise HelpdeskRefused(
                f"{customer.company_name} has no contact to write to; add one first.", "conflict"
            )
        return primary.email
    if to not in {c.email.lower() for c in contacts}:
        raise HelpdeskRefused(
            f"{to[:80]!r} is not one of {customer.company_name}'s contacts; send to a contact "
            "(the primary one when `to` is left out).",
            "invalid",
        )
    return to


def resend_email(
    actor: Actor, customer: Customer, agent: Agent | None, params: dict
) -> ActionResult:
    kind = p.choice(params, "kind", EMAIL_KINDS)
    to = _recipient(customer, params)
    context = {"customer": customer, "kind": kind, "now": timezone.now()}
    subject = " ".join(
        render_to_string(f"helpdesk/actions/email/{kind}.subject.txt", context).split()
    )
    body = render_to_string(f"helpdesk/actions/email/{kind}.txt", context)
    try:
        send_mail(subject, body, settings.DEFAULT_FROM_EMAIL, [to])
    except (smtplib.SMTPException, OSError) as exc:
        raise HelpdeskRefused(
            f"The {kind} email to {to} could not be sent: the mail server said "
            f"{exc.__class__.__name__}: {str(exc)[:200]}. Try again later.",
            "unavailable",
        ) from None
    return ActionResult(
        "resend-email", True, f"Sent the {kind} email to {to} ({subject!r}).",
        {"kind": kind, "to": to, "subject": subject},
    )  # fmt: skip


def describe_resend_email(customer: Customer, agent: Agent | None, params: dict) -> str:
    kind = p.choice(params, "kind", EMAIL_KINDS)
    return f"Send the {kind} email again to {_recipient(customer, params)}."
