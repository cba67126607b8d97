"""The demo data set: 200 customers (Acme Corp among them) with contacts, plans and trials, a
few dozen Customer-tier agents, and thirty days of interactions, so a new user sees the help desk
working. ``manage.py helpdesk load-demo``; loading it again changes nothing.

Acme Corp owns three agents that can really run: ``acme-assistant`` (two replicas; the blank
template answers what it is sent), ``acme-memory`` (the memory template) and ``acme-data``.
Start them and send them tasks for Acme to watch live interactions arrive::

    manage.py agents start acme-assistant acme-memory acme-data
    manage.py queues load --agents acme-assistant --customer acme-corp --rate 5

The other customers' agents are registered only (DRAFT): the history is there, the processes are
not. Everything is created through the services (agents registered as a person would), except
the historic interactions, which are written directly: they are the past.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from agents.models import Agent
from agents.services.registry import NewAgent, register_agent
from helpdesk import interactions
from helpdesk.models import (
    Contact,
    Customer,
    CustomerAgent,
    Interaction,
    Outcome,
    Plan,
    SubscriptionStatus,
)
from helpdesk.refusals import HelpdeskRefused
from portal import roles
from portal.actors import Actor
from portal.services import audits_refusals, record_audit

SEED = 20261204
HISTORY_DAYS = 30
ACME = "acme-corp"
FIRST = ["Globex", "Initech", "Umbrella", "Hooli", "Stark", "Wayne", "Wonka", "Cyberdyne",
         "Tyrell", "Soylent", "Massive", "Pied", "Vandelay", "Oscorp", "Aperture", "Gringotts",
         "Monarch", "Duff", "Nakatomi", "Weyland", "Gekko", "Bluth", "Dunder", "Sterling", "Prestige",
         "Oceanic", "Virtucon", "Zorg", "Kramerica", "Paper", "Blue", "Red", "North", "Silver",
         "Golden", "Iron", "Bright", "Swift", "Quantum"]  # fmt: skip
SECOND = ["Corp", "Industries", "Labs", "Systems", "Logistics", "Analytics", "Foods", "Energy",
          "Media", "Health", "Dynamics", "Partners", "Robotics", "Retail", "Finance"]  # fmt: skip
PEOPLE = ["Ada Lovelace", "Grace Hopper", "Alan Turing", "Katherine Johnson", "Linus Torvalds",
          "Margaret Hamilton", "Dennis Ritchie", "Barbara Liskov", "Ken Thompson", "Frances Allen",
          "Edsger Dijkstra", "Radia Perlman", "Tim Berners-Lee", "Hedy Lamarr", "John Backus",
          "Donald Knuth", "Sophie Wilson", "Guido van Rossum", "Anita Borg", "Bjarne Stroustrup"]  # fmt: skip
TITLES = ["CTO", "Head of Support", "Platform Lead", "Billing", "Engineering Manager", "Ops"]
KINDS = {
    "blank": ["answer", "lookup", "summarise", "classify"],
    "memory": ["put", "get", "forget"],
    "data": ["transform", "aggregate"],
}
ERRORS = [
    "upstream timed out after 30 s",
    "401 Unauthorized: the API key was rejected",
    "the data handler failed: field 'amount' is not a number",
    "connection refused by wow-memory:7103",
]
ACME_AGENTS = [
    ("acme-assistant", "Acme Assistant", "blank", 2, "Answers Acme's support questions."),
    ("acme-memory", "Acme Memory", "memory", 1, "Keeps Acme's conversation context."),
    ("acme-data", "Acme Data", "data", 1, "Turns Acme's orders into daily figures."),
]
AGENT_SHARE = 0.15  # of the other customers, those with an agent of their own


@dataclass(frozen=True)
class Loaded:
    customers: int
    agents: int
    interactions: int

    @property
    def nothing_new(self) -> bool:
        return not (self.customers or self.agents or self.interactions)


@audits_refusals("helpdesk.load_demo")
def load_demo(actor: Actor, count: int = 200) -> Loaded:
    """Create what is missing of the demo set (``count`` customers, 1 to 2000)."""
    actor.require(roles.MANAGE, "load the help desk's demo data")
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= 2000:
        raise HelpdeskRefused("--customers: give a whole number from 1 to 2000.", "invalid")
    rng = random.Random(SEED)
    now = timezone.now().replace(microsecond=0)
    specs = _customer_specs(rng, count, now)
    new_customers = new_agents = new_interactions = 0
    with transaction.atomic():
        existing = set(
            Customer.objects.filter(key__in=[s["key"] for s in specs]).values_list("key", flat=True)
        )
        for spec in specs:
            if spec["key"] in existing:
                continue
            contacts = spec.pop("contacts")
            customer = Customer.objects.create(**spec)
            Contact.objects.bulk_create(
                Contact(customer=customer, **contact) for contact in contacts
            )
            new_customers += 1
        customers = {c.key: c for c in Customer.objects.filter(key__in=[s["key"] for s in specs])}
        for customer, slug, name, template, replicas, description in _agent_specs(rng, customers):
            if Agent.objects.filter(slug=slug).exists():
                continue
            agent = register_agent(
                NewAgent(
                    slug=slug, name=name, description=description, owner_team=customer.company_name,
                    capabilities=("customer-support",), replicas=replicas,
                    config={"template": template} if template != "blank" else {},
                    template=f"{template}@1",
                ),
                actor,
            )  # fmt: skip
            CustomerAgent.objects.create(customer=customer, agent=agent)
            new_agents += 1
        new_interactions = _history(rng, customers, now)
        record_audit(
            actor, "helpdesk.load_demo", target=f"{count} customers",
            customers=new_customers, agents=new_agents, interactions=new_interactions,
        )  # fmt: skip
    return Loaded(new_customers, new_agents, new_interactions)


def _customer_specs(rng: random.Random, count: int, now) -> list[dict]:
    specs = [
        {
            "key": ACME,
            "company_name": "Acme Corp",
            "domain": "acme.com",
            "email": "billing@acme.com",
            "plan": Plan.ENTERPRISE,
            "status": SubscriptionStatus.ACTIVE,
            "seats": 40,
            "monthly_amount_cents": 249_900,
            "created_at": now - timedelta(days=400),
            "trial_started_at": now - timedelta(days=400),
            "trial_ends_at": now - timedelta(days=386),
            "contacts": [
                {
                    "name": "Wile E. Coyote",
                    "email": "wile@acme.com",
                    "title": "CTO",
                    "primary": True,
                },
                {"name": "Road Runner", "email": "beep@acme.com", "title": "Head of Support"},
            ],
        }  # fmt: skip
    ]
    names = {"Acme Corp"}
    while len(specs) < count:
        company = f"{rng.choice(FIRST)} {rng.choice(SECOND)}"
        if company in names:
            company = f"{company} {len(specs)}"
        names.add(company)
        key = "-".join(company.lower().split())[:60]
        domain = f"{key.replace('-', '')}.example"
        plan = rng.choices(list(Plan.values), weights=[3, 4, 3, 1])[0]
        started = now - timedelta(days=rng.randint(3, 700))
        status = _status(rng, plan, started, now)
        people = rng.sample(PEOPLE, rng.randint(1, 3))
        specs.append({
            "key": key, "company_name": company, "domain": domain, "email": f"billing@{domain}",
            "plan": plan, "status": status, "seats": rng.randint(1, 60),
            "monthly_amount_cents": 0 if plan == Plan.TRIAL else rng.choice([4900, 19900, 99900]),
            "created_at": started, "trial_started_at": started,
            "trial_ends_at": started + timedelta(days=14),
            "last_payment_failed_at": (
                now - timedelta(days=rng.randint(1, 5)) if status == SubscriptionStatus.PAST_DUE
                else None
            ),
            "contacts": [
                {"name": person, "email": f"{person.split()[0].lower()}@{domain}",
                 "title": rng.choice(TITLES), "primary": index == 0}
                for index, person in enumerate(people)
            ],
        })  # fmt: skip
    return specs


def _status(rng: random.Random, plan: str, started, now) -> str:
    if plan == Plan.TRIAL:
        ended = started + timedelta(days=14) < now
        return SubscriptionStatus.EXPIRED if ended else SubscriptionStatus.TRIALING
    return rng.choices(
        [SubscriptionStatus.ACTIVE, SubscriptionStatus.PAST_DUE, SubscriptionStatus.CANCELLED],
        weights=[20, 2, 1],
    )[0]


def _agent_specs(rng: random.Random, customers: dict[str, Customer]):
    acme = customers.get(ACME)
    if acme is not None:
        for slug, name, template, replicas, description in ACME_AGENTS:
            yield acme, slug, name, template, replicas, description
    others = sorted(key for key in customers if key != ACME)
    for key in others[:: max(1, round(1 / AGENT_SHARE))]:
        customer = customers[key]
        template = rng.choice(["blank", "memory", "data"])
        slug = f"{key[:50]}-{template}"
        name = f"{customer.company_name} {template.title()}"[:100]
        yield customer, slug, name, template, 1, f"{customer.company_name}'s {template} agent."


def _history(rng: random.Random, customers: dict[str, Customer], now) -> int:
    """Thirty days of interactions for every customer with agents and none yet."""
    links = CustomerAgent.objects.filter(customer__in=customers.values()).select_related("agent")
    by_customer: dict[int, list[Agent]] = {}
    for link in links:
        by_customer.setdefault(link.customer_id, []).append(link.agent)
    busy = set(
        Interaction.objects.filter(customer_id__in=by_customer)
        .values_list("customer_id", flat=True)
        .distinct()
    )
    keys = {customer.pk: key for key, customer in customers.items()}
    rows = []
    for customer_id, agents in by_customer.items():
        if customer_id in busy:
            continue
        is_acme = customers.get(ACME) is not None and customers[ACME].pk == customer_id
        per_day = 120 if is_acme else rng.randint(5, 40)
        failure_share = 0.02 if is_acme else rng.choice([0.0, 0.01, 0.05, 0.2])
        for day in range(HISTORY_DAYS, 0, -1):
            for n in range(max(1, int(per_day * rng.uniform(0.6, 1.4)))):
                agent = rng.choice(agents)
                template = (agent.config or {}).get("template", "blank")
                failed = rng.random() < failure_share
                at = now - timedelta(days=day - 1, seconds=rng.randint(0, 86_399))
                if at > now:
                    continue
                rows.append(Interaction(
                    customer_id=customer_id, agent=agent, agent_slug=agent.slug,
                    message_id=f"demo-{day}-{n}-{rng.randrange(10**9)}",
                    kind=rng.choice(KINDS.get(template, KINDS["blank"])),
                    outcome=Outcome.DEAD_LETTERED if failed else Outcome.SUCCEEDED,
                    latency_ms=int(rng.lognormvariate(3.5, 0.6)) + (2000 if failed else 0),
                    error=rng.choice(ERRORS) if failed else "",
                    attempts=3 if failed else 1, version=agent.version,
                    replica=f"{agent.slug}-{rng.randrange(agent.replicas)}",
                    producer=f"customer:{keys[customer_id]}", at=at,
                ))  # fmt: skip
    Interaction.objects.bulk_create(rows, batch_size=5000, ignore_conflicts=True)
    interactions.rebuild_days(list({row.customer_id for row in rows}))
    return len(rows)
