"""The help desk's part of the audit walk (``tests/audit_kit.py``): customers, the demo set,
diagnoses, quick actions, playbooks and tickets, each called for real by an Admin and by a
Viewer. Quick actions are reached through ``run_action``, their one entry (pages, API, CLI and
diagnoses all go through it); tickets talk to a fake Zendesk over real HTTP."""

from __future__ import annotations

from agents.models import Agent
from helpdesk import customers, demo, links
from helpdesk.actions import services as actions
from helpdesk.detective import services as detective
from helpdesk.models import Contact, Diagnosis, SubscriptionStatus, Ticket
from helpdesk.playbooks import catalog
from helpdesk.playbooks import services as playbooks
from helpdesk.tickets import services as tickets
from tests.audit_kit import Walk
from tests.helpdesk.actions_kit import agent_root, bring_up, dead_letter, link_agent  # noqa: F401
from tests.helpdesk.conftest import make_customer
from tests.helpdesk.tickets_kit import zendesk  # noqa: F401 (the fixture)

walk = Walk()

NOT_WALKED = {
    "helpdesk.playbooks.services.seed_step": "manage.py up's step: seed_playbooks, walked here",
}


def _customer(w, **fields):
    w.fixture("db")
    return make_customer("walk-co", "Walk Co", **fields)


def _agent(w, customer, state: str = "RUNNING") -> Agent:
    agent = link_agent(customer, "walk-agent")
    Agent.objects.filter(pk=agent.pk).update(state=state)
    return Agent.objects.get(pk=agent.pk)


# --- customers and the demo set -----------------------------------------------------------------


@walk("helpdesk.customers.save_customer")
def _(w, actor):
    customer = _customer(w)
    customer.company_name = "Walk Company"
    customers.save_customer(actor, customer, ["company_name"])


@walk("helpdesk.customers.delete_customer")
def _(w, actor):
    customers.delete_customer(actor, _customer(w))


@walk("helpdesk.customers.save_contacts")
def _(w, actor):
    customer = _customer(w)
    Contact.objects.create(customer=customer, name="Road Runner", email="rr@walk-co.example")
    customers.save_contacts(actor, customer, ["rr@walk-co.example"])


@walk("helpdesk.demo.load_demo")
def _(w, actor):
    w.fixture("db")
    demo.load_demo(actor, 3)


@walk(
    "helpdesk.links.link_customer_agent",
    viewer_may="a step of the factory's creation, whose creator's role was checked at create",
)
def _(w, actor):
    customer = _customer(w)
    agent = Agent.objects.create(slug="walk-new", name="Walk New", tier="customer")
    links.link_customer_agent(agent=agent, owner=customer.company_name, actor=actor)


# --- diagnoses ----------------------------------------------------------------------------------


@walk("helpdesk.detective.services.diagnose")
def _(w, actor):
    detective.diagnose(actor, _customer(w), "agent not responding")


@walk("helpdesk.detective.services.record_verdict")
def _(w, actor):
    made = detective.diagnose(w.admin, _customer(w), "agent not responding")
    detective.record_verdict(actor, made, "wrong", "queue_backlog")


@walk("helpdesk.detective.services.apply_fix")
def _(w, actor):
    customer = _customer(w, status=SubscriptionStatus.TRIALING)
    fix = {"action": "reset-trial", "label": "Extend the trial", "params": {"days": 7}}
    made = Diagnosis.objects.create(customer=customer, symptom="trial ended early",
                                    causes=[{"cause": "trial", "title": "Trial", "fix": fix}])  # fmt: skip
    detective.apply_fix(actor, made, 0)


# --- quick actions, through run_action ----------------------------------------------------------


@walk("helpdesk.actions.services.run_action")
def _(w, actor):
    customer = _customer(w, status=SubscriptionStatus.TRIALING)
    actions.run_action(actor, customer, "reset-trial", params={"days": 7})


@walk("helpdesk.actions.account.reset_trial")
def _(w, actor):
    customer = _customer(w, status=SubscriptionStatus.TRIALING)
    actions.run_action(actor, customer, "reset-trial", params={"days": 14})


@walk("helpdesk.actions.cache.clear_cache")
def _(w, actor):
    w.fixture("agent_root")
    customer = _customer(w)
    memory = {"template": "memory", "task_retry_ms": 50, "task_block_ms": 50}
    bring_up(link_agent(customer, "walk-memory", memory), w.fixture("redis_client"))
    actions.run_action(actor, customer, "clear-cache")


@walk("helpdesk.actions.grants.grant_access")
def _(w, actor):
    w.fixture("make_user")("walk-grantee")
    actions.run_action(actor, _customer(w), "grant-access",
                       params={"username": "walk-grantee", "hours": 2, "reason": "walk"})  # fmt: skip


@walk("helpdesk.actions.grants.revoke_access")
def _(w, actor):
    w.fixture("make_user")("walk-grantee")
    customer = _customer(w)
    granted = actions.run_action(w.admin, customer, "grant-access",
                                 params={"username": "walk-grantee", "hours": 2, "reason": "walk"})  # fmt: skip
    actions.run_action(actor, customer, "revoke-access", params={"grant": granted.details["grant"]})


@walk("helpdesk.actions.fleet.restart")
def _(w, actor):
    customer = _customer(w)
    agent = _agent(w, customer)
    actions.run_action(actor, customer, "restart-agent", agent=agent.slug,
                       params={"confirm": True, "reason": "walk"})  # fmt: skip


@walk("helpdesk.actions.fleet.start")
def _(w, actor):
    customer = _customer(w)
    agent = _agent(w, customer, "STOPPED")
    actions.run_action(actor, customer, "start-agent", agent=agent.slug, params={"reason": "walk"})


@walk("helpdesk.actions.fleet.raise_memory")
def _(w, actor):
    customer = _customer(w)
    agent = _agent(w, customer)
    actions.run_action(actor, customer, "raise-memory", agent=agent.slug,
                       params={"confirm": True, "reason": "walk"})  # fmt: skip


@walk("helpdesk.actions.fleet.redrive_letters")
def _(w, actor):
    customer = _customer(w)
    agent = _agent(w, customer)
    dead_letter(w.fixture("redis_client"), agent, customer.key)
    actions.run_action(actor, customer, "redrive-dead-letters", agent=agent.slug)


@walk("helpdesk.actions.fleet.scale")
def _(w, actor):
    w.fixture("agent_root")
    customer = _customer(w)
    agent = bring_up(link_agent(customer, "walk-agent"), w.fixture("redis_client"))
    actions.run_action(actor, customer, "scale-agent", agent=agent.slug, params={"replicas": 2})


# --- playbooks ----------------------------------------------------------------------------------


def _playbook(w, slug: str = "agent-not-responding"):
    w.fixture("db")
    playbooks.seed_playbooks(w.admin)
    return playbooks.get_playbook(slug)


@walk("helpdesk.playbooks.services.seed_playbooks")
def _(w, actor):
    w.fixture("db")
    playbooks.seed_playbooks(actor)


@walk("helpdesk.playbooks.services.save_version")
def _(w, actor):
    data = dict(next(d for d in catalog.SEED if d["slug"] == "slow-performance"))
    data["title"] = "Slow performance (walked)"
    w.fixture("db")
    playbooks.save_version(actor, "slow-performance", data)


@walk("helpdesk.playbooks.services.dry_run", viewer_may="a dry run changes nothing but its record")
def _(w, actor):
    playbooks.dry_run(actor, _customer(w), _playbook(w))


@walk("helpdesk.playbooks.services.run_playbook")
def _(w, actor):
    playbooks.run_playbook(actor, _customer(w), _playbook(w))


# --- tickets, with a fake Zendesk ---------------------------------------------------------------


def _ticket(w, **fields) -> Ticket:
    w.fixture("zendesk")
    customer = _customer(w)
    return Ticket.objects.create(customer=customer, system="zendesk", external_id="77",
                                 number="ZD-77", subject="Slow", status="open", **fields)  # fmt: skip


@walk("helpdesk.tickets.services.create_ticket")
def _(w, actor):
    w.fixture("zendesk")
    tickets.create_ticket(actor, _customer(w), "zendesk", "It is slow", "Since Monday.")


@walk("helpdesk.tickets.services.link_ticket")
def _(w, actor):
    remote = w.fixture("zendesk").add_ticket("It is slow")
    tickets.link_ticket(actor, _customer(w), "zendesk", f"ZD-{remote['id']}")


@walk("helpdesk.tickets.services.update_ticket")
def _(w, actor):
    tickets.update_ticket(actor, _ticket(w), status="solved")


@walk("helpdesk.tickets.services.resolve_conflict")
def _(w, actor):
    ticket = _ticket(w, sync_state="conflict",
                     conflict={"ours": {"status": "solved"}, "theirs": {"status": "hold"}})  # fmt: skip
    tickets.resolve_conflict(actor, ticket, "theirs")


test_writes_an_audit_entry, test_a_viewers_refusal_is_audited = walk.tests()
