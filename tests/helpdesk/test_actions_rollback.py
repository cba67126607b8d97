"""Rolling a customer's agent back to the version before its last upgrade, through servicing:
a real rolling upgrade on the local runtime first, then the quick action starts the roll-back
(an urgent rolling upgrade back, the version left pinned)."""

from __future__ import annotations

import pytest

from helpdesk.actions.services import describe_action, run_action
from servicing import services as servicing
from servicing.models import Upgrade, UpgradeStatus
from servicing.upgrades import requests
from tests.helpdesk import actions_kit as kit
from tests.helpdesk.actions_kit import bring_up, link_agent, new_slug
from tests.servicing.upgrade_kit import Load, drive

agent_root = kit.agent_root  # a fixture
QUICK = {"min_tasks": 20, "min_step_seconds": 1, "verify_seconds": 2}


@pytest.mark.django_db(transaction=True)
def test_rollback_version_undoes_the_last_upgrade_of_the_customers_agent(
    acme, operator_actor, admin_actor, agent_root, redis_client
):
    agent = bring_up(link_agent(acme, new_slug("acme-bot")), redis_client)
    servicing.register_first_release(admin_actor)
    release = servicing.publish(admin_actor, "1.1.0", "local", "Release 1.1.0.")
    load = Load(agent.slug, "hd-rollback", 80.0).start()
    try:
        upgrade = drive(requests.request_upgrade(operator_actor, agent, "1.1.0", "rolling",
                                                 gate_settings=QUICK))  # fmt: skip
    finally:
        load.stop()
    assert upgrade.status == UpgradeStatus.SUCCEEDED, upgrade.outcome
    agent.refresh_from_db()
    assert agent.version == "1.1.0"
    assert describe_action(acme, "rollback-version", agent=agent.slug).startswith(
        f"Roll {agent.name} back from 1.1.0"
    )

    result = run_action(operator_actor, acme, "rollback-version", agent=agent.slug,
                        params={"reason": "ZD-7 errors since the upgrade"})  # fmt: skip

    back = Upgrade.objects.get(pk=result.details["upgrade"])
    assert result.ok and back.to_version == "1.0.0" and back.downgrade
    assert result.message == (
        f"Rolling {agent.name} back to 1.0.0 (upgrade #{back.pk}); the version it left is pinned."
    )
    release.refresh_from_db()
    assert release.pinned and "ZD-7" in release.pinned_reason
