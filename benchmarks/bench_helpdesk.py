"""Help desk benchmark: search, overview and diagnosis at scale, and the diagnosis quality.

A private PostgreSQL and Redis; the data written with COPY, then ANALYZEd:

(a) 100,000 customers (Acme Corp among them) with 1 to 3 contacts each, 2,000 Customer-tier
    agents, tickets, and 5,000,000 interactions over 30 days (Acme Corp has a tenth of them).
    Search: the median server time of ``search_customers`` over a mix of texts (prefix, whole
    name, typo, email, domain, contact, agent slug, ticket number), in-process, so it is what the
    page and the API spend beyond HTTP; target < 50 ms.
(b) Acme Corp's overview page (``GET /helpdesk/customers/acme-corp/``, the whole page rendered,
    through Django's test client) and the overview API; target < 200 ms.
(c) A diagnosis of "agent not responding" for Acme Corp, through the Issue Detective's service;
    target < 1 s.
(d) The diagnosis quality on a labelled set of injected faults (``helpdesk_quality``): top-1
    right in at least 90 %, and the calibration of the stated confidence.

Run it with::

    .venv/bin/python benchmarks/bench_helpdesk.py            # the sizes above
    .venv/bin/python benchmarks/bench_helpdesk.py --smoke    # 2,000 customers, 50,000 interactions (CI)
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from _harness import django_environment, require_sample  # noqa: E402

SEARCHES = ["acme", "acm", "acme corp", "acne corp", "wile@acme.com", "acme.com", "coyote",
            "acme-assistant", "ZD-1042", "globex", "initech labs", "grace", "zzzq"]  # fmt: skip
WORDS = ["Globex", "Initech", "Umbrella", "Hooli", "Stark", "Wayne", "Wonka", "Cyberdyne", "Tyrell",
         "Soylent", "Massive", "Pied", "Vandelay", "Oscorp", "Aperture", "Monarch", "Nakatomi",
         "Weyland", "Gekko", "Bluth", "Dunder", "Sterling", "Oceanic", "Virtucon", "Kramerica",
         "Blue", "North", "Silver", "Golden", "Iron", "Bright", "Swift", "Quantum", "Polar"]  # fmt: skip
SUFFIXES = ["Corp", "Industries", "Labs", "Systems", "Logistics", "Analytics", "Foods", "Energy",
            "Media", "Health", "Dynamics", "Partners", "Robotics", "Retail", "Finance"]  # fmt: skip
PEOPLE = ["Ada", "Grace", "Alan", "Katherine", "Linus", "Margaret", "Dennis", "Barbara", "Ken",
          "Frances", "Edsger", "Radia", "Hedy", "John", "Donald", "Sophie", "Guido", "Anita"]  # fmt: skip
LAST = ["Lovelace", "Hopper", "Turing", "Johnson", "Hamilton", "Ritchie", "Liskov", "Thompson",
        "Allen", "Dijkstra", "Perlman", "Lamarr", "Backus", "Knuth", "Wilson", "Borg"]  # fmt: skip

verdicts: list[bool] = []


def met(ok: bool) -> str:
    verdicts.append(ok)
    return "→ met" if ok else "NOT MET"


def timed(call, runs: int) -> list[float]:
    call()  # warm: the first call pays for imports and the role lookup
    seconds = []
    for _ in range(runs):
        started = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - started)
    return seconds


def ms(values: list[float]) -> str:
    return f"median {statistics.median(values) * 1000:.1f} ms (min {min(values) * 1000:.1f}, max {max(values) * 1000:.1f}, n={len(values)})"


def copy_rows(table: str, columns: list[str], rows) -> int:
    """COPY ``rows`` (tuples) into ``table``; answers how many."""
    from django.db import connection

    count = 0
    with connection.cursor() as cursor:
        raw = cursor.cursor  # psycopg's cursor, for COPY
        names = ", ".join(f'"{column}"' for column in columns)
        with raw.copy(f"COPY {table} ({names}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
                count += 1
    return count


def load(customers: int, interactions: int, seed: int = 42) -> dict:
    """The data set, written with COPY; answers what was made."""
    from django.db import connection

    from agents.models import Agent
    from agents.services.registry import NewAgent, register_agent
    from helpdesk.models import Customer, CustomerAgent
    from portal.actors import Actor

    rng = random.Random(seed)
    now = datetime.now(UTC)
    started = time.perf_counter()
    acme = Customer.objects.create(
        key="acme-corp", company_name="Acme Corp", domain="acme.com", email="billing@acme.com",
        plan="enterprise", status="active", created_at=now - timedelta(days=400),
    )  # fmt: skip
    acme.contacts.create(name="Wile E. Coyote", email="wile@acme.com", primary=True)

    def customer_rows():
        for n in range(1, customers):
            company = f"{rng.choice(WORDS)} {rng.choice(SUFFIXES)} {n}"
            key = f"{company.lower().replace(' ', '-')}"
            domain = f"{key}.example"
            plan = rng.choice(["trial", "starter", "pro", "enterprise"])
            status = "trialing" if plan == "trial" else "active"
            created = now - timedelta(days=rng.randint(1, 700))
            yield (key, company, domain, f"billing@{domain}", plan, status, 1, 0, 0, "",
                   created, now, created, created + timedelta(days=14))  # fmt: skip

    copy_rows(
        "helpdesk_customer",
        ["key", "company_name", "domain", "email", "plan", "status", "seats",
         "monthly_amount_cents", "trial_resets", "notes", "created_at", "updated_at",
         "trial_started_at", "trial_ends_at"],
        customer_rows(),
    )  # fmt: skip
    ids = list(Customer.objects.order_by("id").values_list("id", flat=True))

    def contact_rows():
        for customer_id in ids[1:]:
            for k in range(rng.randint(1, 3)):
                first, last = rng.choice(PEOPLE), rng.choice(LAST)
                yield (
                    customer_id,
                    f"{first} {last}",
                    f"{first.lower()}.{last.lower()}{k}@c{customer_id}.example",
                    "",
                    k == 0,
                )

    copy_rows(
        "helpdesk_contact", ["customer_id", "name", "email", "title", "primary"], contact_rows()
    )
    actor = Actor.command("benchmark")
    agents = []
    for slug in ("acme-assistant", "acme-memory", "acme-data"):
        agent = register_agent(NewAgent(slug=slug, name=slug.replace("-", " ").title()), actor)
        CustomerAgent.objects.create(customer=acme, agent=agent)
        agents.append((agent.pk, slug, acme.pk))
    others = min(2000, max(10, customers // 50))
    Agent.objects.bulk_create(
        Agent(slug=f"c{ids[i]}-agent", name=f"Customer {ids[i]} agent", tier="customer")
        for i in range(1, others + 1)
    )
    for agent_id, slug in Agent.objects.filter(slug__endswith="-agent").values_list("id", "slug"):
        customer_id = int(slug[1:].split("-")[0])
        agents.append((agent_id, slug, customer_id))
    CustomerAgent.objects.bulk_create(
        CustomerAgent(customer_id=c, agent_id=a) for a, s, c in agents[3:]
    )
    copy_rows(
        "helpdesk_ticket",
        ["customer_id", "system", "external_id", "number", "subject", "status", "priority",
         "assignee", "url", "remote_version", "sync_state", "sync_problem", "conflict",
         "created_at", "updated_at"],
        ((rng.choice(ids), "zendesk", str(1000 + n), f"ZD-{1000 + n}", "Agent not answering",
          "open", "normal", "", "", "", "in_sync", "", "{}", now, now) for n in range(customers // 10)),
    )  # fmt: skip
    by_customer: dict[int, list[tuple[int, str]]] = {}
    for agent_id, slug, customer_id in agents:
        by_customer.setdefault(customer_id, []).append((agent_id, slug))
    owners = list(by_customer)

    def interaction_rows():
        span = 30 * 86400
        for n in range(interactions):
            customer_id = acme.pk if n % 10 == 0 else rng.choice(owners)
            agent_id, slug = rng.choice(by_customer[customer_id])
            failed = rng.random() < 0.03
            at = now - timedelta(seconds=rng.randrange(span))
            yield (customer_id, agent_id, slug, f"{n}-0", "lookup",
                   "dead_lettered" if failed else "succeeded", rng.randint(5, 400),
                   "upstream timed out" if failed else "", 3 if failed else 1, "1.0.0",
                   f"{slug}-0", f"customer:{customer_id}", at)  # fmt: skip

    copy_rows(
        "helpdesk_interaction",
        ["customer_id", "agent_id", "agent_slug", "message_id", "kind", "outcome", "latency_ms",
         "error", "attempts", "version", "replica", "producer", "at"],
        interaction_rows(),
    )  # fmt: skip
    from helpdesk.interactions import rebuild_days

    rebuild_days()  # the per-day counts the ingester would have kept
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    return {"customers": len(ids), "agents": len(agents), "interactions": interactions,
            "seconds": time.perf_counter() - started}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="Small sizes, once (CI).")
    parser.add_argument("--customers", type=int, default=None)
    parser.add_argument("--interactions", type=int, default=None)
    parser.add_argument("--runs", type=int, default=None)
    args = parser.parse_args()
    customers = args.customers or (2_000 if args.smoke else 100_000)
    interactions = args.interactions or (50_000 if args.smoke else 5_000_000)
    runs = args.runs or (3 if args.smoke else 15)
    with django_environment():
        from django.contrib.auth import get_user_model
        from django.test import Client

        from helpdesk import customers as customer_service
        from portal.actors import Actor
        from portal.roles import ensure_roles

        made = load(customers, interactions)
        print(f"data: {made['customers']:,} customers, {made['agents']:,} agents, "
              f"{made['interactions']:,} interactions, loaded in {made['seconds']:.0f} s")  # fmt: skip
        ensure_roles()
        admin = get_user_model().objects.create_superuser("bench", "bench@example.com", "x" * 16)
        actor = Actor(kind="user", user=admin, source="benchmark")

        searches, by_kind = [], {}
        for text in SEARCHES:
            seconds = timed(lambda text=text: customer_service.search_customers(actor, text), runs)
            searches += seconds
            by_kind[text] = statistics.median(seconds)
        require_sample(searches, "search")
        slowest = max(by_kind, key=by_kind.get)
        print(
            f"(a) search, {len(SEARCHES)} kinds of text: {ms(searches)}; slowest: {slowest!r} "
            f"median {by_kind[slowest] * 1000:.1f} ms; target < 50 ms "
            f"{met(statistics.median(searches) < 0.050 and by_kind[slowest] < 0.100)}"
        )
        print("    " + ", ".join(f"{t!r} {v * 1000:.0f}" for t, v in by_kind.items()) + " (ms)")
        hits = customer_service.search_customers(actor, "acne corp")
        print(f"    'acne corp' finds {hits[0].customer.company_name if hits else 'nothing'} first")

        # Pages render with the plain static storage: no manifest (collectstatic) is needed.
        from django.conf import settings
        from django.test import override_settings

        plain = {**settings.STORAGES, "staticfiles": {
            "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}}  # fmt: skip
        override_settings(STORAGES=plain).enable()
        client = Client(HTTP_HOST="127.0.0.1")
        client.force_login(admin)
        page = timed(lambda: client.get("/helpdesk/customers/acme-corp/"), runs)
        api = timed(lambda: client.get("/api/platform/helpdesk/customers/acme-corp/overview"), runs)
        status = client.get("/helpdesk/customers/acme-corp/").status_code
        require_sample(page, "overview")
        print(
            f"(b) Acme Corp's overview page ({interactions // 10:,} interactions): {ms(page)}, "
            f"HTTP {status}; target < 200 ms {met(statistics.median(page) < 0.200 and status == 200)}"
        )
        print(f"    overview API: {ms(api)} {met(statistics.median(api) < 0.200)}")

        try:
            from helpdesk.detective import services as detective
        except ImportError:
            print("(c) diagnosis: the Issue Detective is not built yet; NOT MEASURED")
            verdicts.append(False)
        else:
            from helpdesk.models import Customer

            acme = Customer.objects.get(key="acme-corp")
            diagnosing = timed(
                lambda: detective.diagnose(actor, acme, "agent not responding"), runs
            )
            print(
                f"(c) a diagnosis of 'agent not responding' for Acme Corp: {ms(diagnosing)}; "
                f"target < 1 s {met(statistics.median(diagnosing) < 1.0)}"
            )
    quality_ok = _quality(args.smoke)
    verdicts.append(quality_ok)
    return 0 if all(verdicts) or args.smoke else 1


def _quality(smoke: bool) -> bool:
    """(d), in a child process with its own database (Django is configured once per process)."""
    import subprocess

    quality = HERE / "helpdesk_quality.py"
    if not quality.exists():
        print(
            "(d) diagnosis quality: benchmarks/helpdesk_quality.py is not written yet; NOT MEASURED"
        )
        return False
    command = [sys.executable, str(quality)] + (["--cases", "15"] if smoke else [])
    print("(d) diagnosis quality on injected faults:", flush=True)
    return subprocess.run(command, check=False).returncode == 0


if __name__ == "__main__":
    sys.exit(main())
