"""Quick actions on the customer's account: trial resets within bounds, notification emails read
back from a real SMTP server, and temporary access grants enforced by the agents app itself
(a Viewer with a grant restarts this customer's agent, and only until the grant ends)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.exceptions import PermissionDenied
from django.db import DatabaseError, connection
from django.utils import timezone

from agents import services as agent_services
from agents.models import Operation
from helpdesk import tasks
from helpdesk.actions.grants import revoke_expired_grants, scoped_role
from helpdesk.actions.services import describe_action, run_action
from helpdesk.models import AccessGrant, Contact, SubscriptionStatus
from helpdesk.refusals import HelpdeskRefused
from portal.actors import Actor
from portal.models import AuditEntry
from tests.helpdesk import actions_kit as kit
from tests.helpdesk.actions_kit import bring_up, link_agent, new_slug, run_pending_operations
from tests.helpdesk.conftest import make_customer

agent_root, smtp_server = kit.agent_root, kit.smtp_server  # fixtures

# --- reset a trial -------------------------------------------------------------------------------


def trialing(acme, days_left: int = 2, status=SubscriptionStatus.TRIALING):
    acme.status = status
    acme.trial_ends_at = timezone.now() + timedelta(days=days_left)
    acme.save()
    return acme


def test_reset_trial_moves_the_end_counts_and_is_bounded(acme, operator_actor, settings):
    settings.HELPDESK_TRIAL_MAX_RESETS = 2
    trialing(acme, days_left=-3, status=SubscriptionStatus.EXPIRED)
    assert describe_action(acme, "reset-trial", params={"days": 7}).startswith(
        "Extend Acme Corp's trial by 7 day(s)"
    )

    first = run_action(operator_actor, acme, "reset-trial", params={"days": "7"})

    acme.refresh_from_db()
    assert first.ok and acme.status == SubscriptionStatus.TRIALING and acme.trial_resets == 1
    # An expired trial restarts from now, not from its old end.
    assert abs((acme.trial_ends_at - timezone.now()) - timedelta(days=7)) < timedelta(minutes=1)
    second = run_action(operator_actor, acme, "reset-trial", params={"days": 3})
    acme.refresh_from_db()
    assert second.details["trial_resets"] == 2
    assert abs((acme.trial_ends_at - timezone.now()) - timedelta(days=10)) < timedelta(minutes=1)
    ends = acme.trial_ends_at
    with pytest.raises(HelpdeskRefused, match=r"reset 2 time\(s\) already; the limit is 2"):
        run_action(operator_actor, acme, "reset-trial", params={"days": 3})
    acme.refresh_from_db()
    assert (acme.trial_ends_at, acme.trial_resets) == (ends, 2)
    entries = AuditEntry.objects.filter(action="helpdesk.action.reset-trial")
    assert [e.outcome for e in entries.order_by("id")] == ["success", "success", "refused"]


@pytest.mark.parametrize(
    ("action", "params"),
    [("reset-trial", {"days": 7}), ("grant-access", {"username": "viv", "hours": 2})],
)
def test_an_action_whose_audit_entry_fails_changes_nothing(
    acme, operator_actor, viewer, action, params
):
    # The audit write fails in the database itself (a trigger, as a full disk would).
    trialing(acme)
    viewer.username = "viv"
    viewer.save()
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE FUNCTION test_fail_audit() RETURNS trigger AS $$ BEGIN "
            "IF NEW.action LIKE 'helpdesk.action.%%' THEN RAISE EXCEPTION 'no space left'; END IF; "
            "RETURN NEW; END $$ LANGUAGE plpgsql"
        )
        cursor.execute(
            "CREATE TRIGGER test_fail_audit BEFORE INSERT ON portal_auditentry "
            "FOR EACH ROW EXECUTE FUNCTION test_fail_audit()"
        )
    before = (acme.trial_ends_at, acme.trial_resets)

    with pytest.raises(DatabaseError, match="no space left"):
        run_action(operator_actor, acme, action, params=params)

    acme.refresh_from_db()
    assert (acme.trial_ends_at, acme.trial_resets) == before
    assert not AccessGrant.objects.exists()


def test_reset_trial_of_a_paying_customer_is_refused(acme, operator_actor):
    with pytest.raises(HelpdeskRefused) as refused:
        run_action(operator_actor, acme, "reset-trial", params={"days": 3})
    assert refused.value.message == (
        "Acme Corp is active, not on a trial: only a trialing or expired trial can be reset."
    )
    acme.refresh_from_db()
    assert acme.trial_resets == 0


# --- resend an email -----------------------------------------------------------------------------


def test_resend_email_goes_to_the_primary_contact_through_a_real_smtp_server(
    acme, operator_actor, smtp_server
):
    trialing(acme, days_left=3)

    result = run_action(operator_actor, acme, "resend-email", params={"kind": "trial-ending"})

    assert result.ok and result.details["to"] == "wile@acme.com"
    [message] = smtp_server.messages
    assert message["To"] == "wile@acme.com"
    assert message["Subject"].startswith("Your WAOOAW trial ends ")
    assert "The trial of Acme Corp ends on" in message.get_content()
    assert smtp_server.envelopes[0][1] == ["wile@acme.com"]


def test_resend_email_to_another_contact_and_not_to_strangers(acme, operator_actor, smtp_server):
    Contact.objects.create(customer=acme, name="Road Runner", email="beep@acme.com")

    run_action(
        operator_actor, acme, "resend-email", params={"kind": "welcome", "to": "beep@acme.com"}
    )
    with pytest.raises(
        HelpdeskRefused, match="'evil@example.com' is not one of Acme Corp's contacts"
    ):
        run_action(operator_actor, acme, "resend-email", params={"kind": "welcome", "to": "evil@example.com"})  # fmt: skip

    assert [m["To"] for m in smtp_server.messages] == ["beep@acme.com"]


def test_resend_email_when_the_mail_server_is_away_says_so(acme, operator_actor, settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_TIMEOUT = "127.0.0.1", 1, 2
    with pytest.raises(HelpdeskRefused) as refused:
        run_action(operator_actor, acme, "resend-email", params={"kind": "welcome"})
    assert refused.value.code == "unavailable" and refused.value.status == 503
    assert "could not be sent" in refused.value.message


# --- temporary access ----------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("agent_root")
def test_a_viewer_with_a_grant_restarts_this_customers_agent_only_until_it_ends(
    acme, operator_actor, viewer, viewer_actor, redis_client
):
    ours = bring_up(link_agent(acme, new_slug("acme-bot")), redis_client)
    globex = make_customer("globex", "Globex")
    theirs = link_agent(globex, new_slug("globex-bot"))
    with pytest.raises(PermissionDenied):
        agent_services.request_action(ours, "restart", viewer_actor)

    granted = run_action(
        operator_actor, acme, "grant-access", params={"username": viewer.username, "hours": 2}
    )

    assert granted.ok and scoped_role(viewer, ours) == "Operator"
    assert scoped_role(viewer, theirs) is None
    # Through the agents app's own service: the grant is enforced there.
    operation = agent_services.request_action(ours, "restart", viewer_actor, enqueue=False)
    assert agent_services.run_operation(str(operation.pk)).status == Operation.Status.SUCCEEDED
    # And through the help desk's quick action.
    restarted = run_action(viewer_actor, acme, "restart-agent", agent=ours.slug)
    assert restarted.ok
    run_pending_operations(ours)
    with pytest.raises(PermissionDenied):
        agent_services.request_action(theirs, "provision", viewer_actor)
    with pytest.raises(PermissionDenied):  # other quick actions stay Operator's
        run_action(viewer_actor, acme, "reset-trial", params={"days": 1})

    # The grant's time passes: refused at once, before the sweep; the sweep then ends it.
    AccessGrant.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    with pytest.raises(PermissionDenied):
        agent_services.request_action(ours, "restart", viewer_actor)
    assert revoke_expired_grants in tasks.SWEEPS
    tasks.sweep()
    grant = AccessGrant.objects.get()
    assert grant.revoked_at is not None and grant.revoked_by == "system:helpdesk"
    entry = AuditEntry.objects.get(action="helpdesk.grant.expired")
    assert entry.actor == "system:helpdesk" and entry.target == "customer:acme-corp"
    assert revoke_expired_grants() == 0


def test_grants_are_bounded_checked_and_revoked_early(acme, operator_actor, viewer, settings):
    settings.HELPDESK_GRANT_MAX_HOURS = 24
    bad = [
        ({"username": viewer.username, "hours": 25}, "hours must be a whole number from 1 to 24"),
        ({"username": "nobody", "hours": 1}, "There is no active user 'nobody'"),
        (
            {"username": viewer.username, "hours": 1, "role": "Admin"},
            "role must be one of Operator",
        ),
        ({"username": "x\x00", "hours": 1}, "username contains a NUL character"),
        ({"hours": 1}, "username is required."),
    ]
    for params, message in bad:
        with pytest.raises(HelpdeskRefused, match=message):
            run_action(operator_actor, acme, "grant-access", params=params)
    assert not AccessGrant.objects.exists()

    run_action(
        operator_actor, acme, "grant-access", params={"username": viewer.username, "hours": 1}
    )
    with pytest.raises(HelpdeskRefused, match="has access to Acme Corp's agents until"):
        run_action(operator_actor, acme, "grant-access", params={"username": viewer.username, "hours": 1})  # fmt: skip
    ended = run_action(operator_actor, acme, "revoke-access", params={"username": viewer.username})

    assert ended.message == f"Ended {viewer.username}'s access to Acme Corp's agents."
    grant = AccessGrant.objects.get()
    assert (
        grant.revoked_at is not None and grant.revoked_by == f"user:{operator_actor.user.username}"
    )
    with pytest.raises(HelpdeskRefused, match="has no active grant"):
        run_action(operator_actor, acme, "revoke-access", params={"grant": grant.pk})


def test_an_operator_needs_no_grant(acme, operator_actor, operator):
    with pytest.raises(HelpdeskRefused, match="is Operator already"):
        run_action(operator_actor, acme, "grant-access", params={"username": operator.username, "hours": 1})  # fmt: skip


def test_an_anonymous_or_system_actor_has_no_scoped_role(acme):
    agent = link_agent(acme, "acme-bot")
    assert scoped_role(None, agent) is None
    assert agent_services.check_action(agent, "provision", Actor.system("x")).allowed
