"""Interactions: the tasks agents did for customers, read from agentd's interaction stream
(``contract.INTERACTIONS``) into :class:`~helpdesk.models.Interaction` rows.

agentd adds a record in the same transaction that acknowledges (or dead-letters) a task that
names a customer. :func:`ingest_interactions` (a Celery beat job every
``HELPDESK_INGEST_SECONDS``) reads them through a consumer group, stores them with one insert
that ignores a task already stored, and only then acknowledges and deletes them: a worker killed
anywhere in between reads them again and stores nothing twice. Records of a customer the help
desk does not know are acknowledged and counted, not stored (there is no one to show them to).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import redis
from django.db import connection, transaction

from agents.agentd import contract
from agents.models import Agent
from helpdesk.models import Customer, Interaction, Outcome
from observability.queues.catalog import agent_redis

logger = logging.getLogger(__name__)

GROUP = "helpdesk"
CONSUMER = "ingest"
BATCH = 2000
OUTCOMES = {
    contract.REPLY_SUCCEEDED: Outcome.SUCCEEDED,
    contract.REPLY_DEAD_LETTERED: Outcome.DEAD_LETTERED,
}


@dataclass(frozen=True)
class Ingested:
    """Records read: stored (new: one stored before, a redelivery, is not counted), for no
    known customer, unreadable (missing or malformed fields)."""

    stored: int = 0
    unknown_customer: int = 0
    unreadable: int = 0

    def __add__(self, other: Ingested) -> Ingested:
        return Ingested(
            self.stored + other.stored,
            self.unknown_customer + other.unknown_customer,
            self.unreadable + other.unreadable,
        )


def ensure_group(client: redis.Redis) -> None:
    try:
        client.xgroup_create(contract.INTERACTIONS, GROUP, id="0", mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


def ingest_interactions(max_batches: int = 50, client: redis.Redis | None = None) -> Ingested:
    """Store what agentd recorded since the last call (at most ``max_batches`` × BATCH), first
    what an earlier call read but did not acknowledge."""
    client = client or agent_redis()
    ensure_group(client)
    total = Ingested()
    # "0": this consumer's own pending records (a call that died before acknowledging them);
    # ">": new ones.
    for start in ("0", ">"):
        for _ in range(max_batches):
            response: Any = client.xreadgroup(
                GROUP, CONSUMER, {contract.INTERACTIONS: start}, count=BATCH
            )
            read = response[0][1] if response else []
            # A record deleted while pending comes back without fields: nothing to store.
            entries = [(message_id, fields) for message_id, fields in read if fields]
            if not entries:
                break
            total += _store(client, entries)
            if len(entries) < BATCH:
                break
    return total


def _store(client: redis.Redis, entries: list[tuple[str, dict[str, str]]]) -> Ingested:
    keys = {fields.get(contract.REPLY_CUSTOMER, "") for _, fields in entries}
    slugs = {fields.get(contract.REPLY_AGENT, "") for _, fields in entries}
    customers = dict(Customer.objects.filter(key__in=keys).values_list("key", "id"))
    agents = dict(Agent.objects.filter(slug__in=slugs).values_list("slug", "id"))
    rows, unknown, unreadable = [], 0, 0
    for _, fields in entries:
        customer_id = customers.get(fields.get(contract.REPLY_CUSTOMER, ""))
        if customer_id is None:
            unknown += 1
            continue
        row = _row(fields, customer_id, agents)
        if row is None:
            unreadable += 1
            continue
        rows.append(row)
    with transaction.atomic():
        stored = store_rows(rows)
    ids = [message_id for message_id, _ in entries]
    pipeline = client.pipeline(transaction=True)
    pipeline.xack(contract.INTERACTIONS, GROUP, *ids)
    pipeline.xdel(contract.INTERACTIONS, *ids)
    pipeline.execute()
    if unknown or unreadable:
        logger.info(
            "interactions: %d of %d records name no known customer, %d unreadable",
            unknown, len(entries), unreadable,
        )  # fmt: skip
    return Ingested(stored, unknown, unreadable)


def _row(fields: dict[str, str], customer_id: int, agents: dict[str, int]) -> Interaction | None:
    slug = fields.get(contract.REPLY_AGENT, "")
    message_id = fields.get(contract.REPLY_MESSAGE_ID, "")
    outcome = OUTCOMES.get(fields.get(contract.REPLY_STATUS, ""))
    try:
        at_ms = int(fields.get(contract.INTERACTION_AT, ""))
        latency = max(0, int(fields.get(contract.REPLY_DURATION_MS) or 0))
        attempts = max(1, int(fields.get(contract.REPLY_ATTEMPTS) or 1))
    except ValueError:
        return None
    if not slug or not message_id or outcome is None:
        return None
    return Interaction(
        customer_id=customer_id,
        agent_id=agents.get(slug),
        agent_slug=slug[:63],
        message_id=message_id[:40],
        kind=(fields.get(contract.INTERACTION_KIND) or "")[:60],
        outcome=outcome,
        latency_ms=min(latency, 2**31 - 1),
        error=(fields.get(contract.REPLY_ERROR) or "")[:500],
        attempts=min(attempts, 32767),
        version=(fields.get(contract.REPLY_VERSION) or "")[:50],
        replica=(fields.get(contract.REPLY_REPLICA) or "")[:100],
        producer=(fields.get(contract.INTERACTION_PRODUCER) or "")[:120],
        at=datetime.fromtimestamp(at_ms / 1000, tz=UTC),
    )


# --- storing, with the per-day counts -------------------------------------------------------

_COLUMNS = [
    ("customer_id", "bigint"), ("agent_id", "bigint"), ("agent_slug", "text"),
    ("message_id", "text"), ("kind", "text"), ("outcome", "text"), ("latency_ms", "integer"),
    ("error", "text"), ("attempts", "smallint"), ("version", "text"), ("replica", "text"),
    ("producer", "text"), ("at", "timestamptz"),
]  # fmt: skip
_INSERT = (
    f"INSERT INTO helpdesk_interaction ({', '.join(name for name, _ in _COLUMNS)}) "
    f"SELECT * FROM unnest({', '.join(f'%s::{kind}[]' for _, kind in _COLUMNS)}) "
    "ON CONFLICT (agent_slug, message_id) DO NOTHING RETURNING customer_id, at, outcome"
)
_COUNT_DAYS = """
    INSERT INTO helpdesk_interactionday (customer_id, day, succeeded, failed)
    SELECT * FROM unnest(%s::bigint[], %s::date[], %s::integer[], %s::integer[])
    ON CONFLICT (customer_id, day) DO UPDATE
       SET succeeded = helpdesk_interactionday.succeeded + EXCLUDED.succeeded,
           failed = helpdesk_interactionday.failed + EXCLUDED.failed
"""


def store_rows(rows: list[Interaction]) -> int:
    """Insert ``rows`` (a task stored before is skipped) and add the new ones to their
    customers' per-day counts; answers how many were new. Call it inside a transaction."""
    if not rows:
        return 0
    columns = [[getattr(row, name) for row in rows] for name, _ in _COLUMNS]
    with connection.cursor() as cursor:
        cursor.execute(_INSERT, columns)
        new = cursor.fetchall()
        days: dict[tuple[int, date], list[int]] = {}
        for customer_id, at, outcome in new:
            counts = days.setdefault((customer_id, at.astimezone(UTC).date()), [0, 0])
            counts[0 if outcome == Outcome.SUCCEEDED else 1] += 1
        if days:
            keys = sorted(days)  # one order for every writer: no deadlock between two
            cursor.execute(
                _COUNT_DAYS,
                [[k[0] for k in keys], [k[1] for k in keys],
                 [days[k][0] for k in keys], [days[k][1] for k in keys]],
            )  # fmt: skip
    return len(new)


def rebuild_days(customer_ids: list[int] | None = None) -> None:
    """Count the per-day figures again from the interactions themselves (of these customers,
    or everyone's): after writing interactions some other way (the demo data, a benchmark)."""
    where = "WHERE customer_id = ANY(%s)" if customer_ids is not None else ""
    params = [customer_ids] if customer_ids is not None else []
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM helpdesk_interactionday {where}", params)
        cursor.execute(
            "INSERT INTO helpdesk_interactionday (customer_id, day, succeeded, failed) "
            "SELECT customer_id, (at AT TIME ZONE 'UTC')::date, "
            "count(*) FILTER (WHERE outcome = 'succeeded'), "
            "count(*) FILTER (WHERE outcome <> 'succeeded') "
            f"FROM helpdesk_interaction {where} GROUP BY 1, 2",
            params,
        )
