"""Finding customers: one by its key, and search as you type.

Search looks at the company name, domain and billing email, every contact's name and email, the
customer's agents (slug and name) and its tickets' numbers. It is fuzzy (pg_trgm word
similarity, so "acme corp", "acm" and "acne" all find Acme Corp) and ranked: an exact match of
the whole text first, then a prefix, then by similarity, with each hit saying which field
matched. One SQL statement per search, served by the trigram indexes, whatever the number of
customers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from django.db import connection, transaction
from django.db.models import Count

from helpdesk.models import KEY_MAX, Customer
from helpdesk.refusals import HelpdeskRefused
from portal import roles
from portal.actors import Actor
from portal.services import record_audit

SEARCH_MAX_CHARS = 100
SEARCH_LIMIT = 20
SEARCH_LIMIT_MAX = 100
# Word similarity (0..1) a fuzzy hit needs. pg_trgm's default (0.6) misses one-letter typos in
# short words ("acne" for "acme").
SIMILARITY = 0.3
_KEY = re.compile(r"^[-a-zA-Z0-9_]+$")


def require_viewer(actor: Actor) -> None:
    actor.require(roles.VIEW, "see the help desk")


def get_customer(key: object) -> Customer:
    """The customer whose key (``customer_id``) is ``key``; ``not_found`` otherwise."""
    text = key.strip() if isinstance(key, str) else ""
    customer = None
    if text and len(text) <= KEY_MAX and _KEY.match(text):
        customer = Customer.objects.filter(key=text).first()
    if customer is None:
        shown = text[:70] if text and "\x00" not in text else "that"
        raise HelpdeskRefused(
            f"No customer has the id {shown!r}; search for it by name, email or domain "
            "(`helpdesk search TEXT`).",
            "not_found",
        )
    return customer


@dataclass(frozen=True)
class Hit:
    customer: Customer
    score: float
    matched: str  # which field: company, domain, email, contact, agent, ticket
    matched_text: str
    agents_count: int


# Each branch: (customer id, score, field, matched text). An exact match scores 3, a prefix of
# the field (or of one of its words) 2, otherwise the word similarity (0..1).
_BRANCH = """
    SELECT {id} AS customer_id,
           CASE WHEN lower({col}) = %(exact)s THEN 3.0
                WHEN lower({col}) LIKE %(prefix)s OR lower({col}) LIKE %(word_prefix)s THEN 2.0
                ELSE word_similarity(%(exact)s, lower({col})) END AS score,
           '{field}' AS field, {col} AS text
      FROM {table}
     WHERE {col} <> '' AND ({col} ILIKE %(contains)s OR %(exact)s <%% {col})
"""
_SOURCES = [
    ("helpdesk_customer", "id", "company_name", "company"),
    ("helpdesk_customer", "id", "domain", "domain"),
    ("helpdesk_customer", "id", "email", "email"),
    ("helpdesk_contact", "customer_id", "name", "contact"),
    ("helpdesk_contact", "customer_id", "email", "contact"),
    ("helpdesk_ticket", "customer_id", "number", "ticket"),
]
_AGENT_BRANCH = """
    SELECT link.customer_id,
           CASE WHEN lower(a.{col}) = %(exact)s THEN 3.0
                WHEN lower(a.{col}) LIKE %(prefix)s THEN 2.0
                ELSE word_similarity(%(exact)s, lower(a.{col})) END AS score,
           'agent' AS field, a.{col} AS text
      FROM helpdesk_customeragent link JOIN agents_agent a ON a.id = link.agent_id
     WHERE a.{col} ILIKE %(contains)s OR %(exact)s <%% a.{col}
"""
_SQL = (
    "SELECT DISTINCT ON (customer_id) customer_id, score, field, text FROM ("
    + " UNION ALL ".join(
        [_BRANCH.format(table=t, id=i, col=c, field=f) for t, i, c, f in _SOURCES]
        + [_AGENT_BRANCH.format(col=c) for c in ("slug", "name")]
    )
    + ") hits ORDER BY customer_id, score DESC"
)
_RANKED = f"SELECT * FROM ({_SQL}) best ORDER BY score DESC, customer_id LIMIT %(limit)s"


def _like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def clean_query(q: object) -> str:
    """The search text, trimmed; refused (``invalid``) when it cannot be one."""
    if q is None:
        return ""
    if not isinstance(q, str):
        raise HelpdeskRefused("q: the search must be text.", "invalid")
    if "\x00" in q:
        raise HelpdeskRefused("q: the search may not contain NUL characters.", "invalid")
    text = " ".join(q.split())
    if len(text) > SEARCH_MAX_CHARS:
        raise HelpdeskRefused(
            f"q: the search is {len(text)} characters long; use at most {SEARCH_MAX_CHARS}.",
            "invalid",
        )
    return text


def search_customers(actor: Actor, q: object, limit: object = SEARCH_LIMIT) -> list[Hit]:
    """Customers matching ``q``, best first (at most ``limit``); none for an empty text."""
    require_viewer(actor)
    text = clean_query(q)
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= SEARCH_LIMIT_MAX:
        raise HelpdeskRefused(
            f"limit: give a whole number from 1 to {SEARCH_LIMIT_MAX}.", "invalid"
        )
    if not text:
        return []
    exact = text.lower()
    like = _like(exact)
    params = {
        "exact": exact,
        "prefix": f"{like}%",
        "word_prefix": f"% {like}%",
        "contains": f"%{like}%",
        "limit": limit,
    }
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL pg_trgm.word_similarity_threshold = %s", [SIMILARITY])
        cursor.execute(_RANKED, params)
        rows = cursor.fetchall()
    ids = [row[0] for row in rows]
    customers = Customer.objects.filter(id__in=ids).annotate(agents_count=Count("links"))
    by_id = {customer.id: customer for customer in customers}
    return [
        Hit(by_id[cid], float(score), field, text_, by_id[cid].agents_count)
        for cid, score, field, text_ in rows
        if cid in by_id
    ]


# --- changing customers (the admin's door) -----------------------------------------------------


def save_customer(actor: Actor, customer: Customer, changed: list[str]) -> Customer:
    """Create or change a customer (Admin), audited with the fields changed."""
    actor.require(roles.MANAGE, "change customers")
    adding = customer.pk is None
    with transaction.atomic():
        customer.full_clean()
        customer.save()
        record_audit(
            actor, "helpdesk.customer.create" if adding else "helpdesk.customer.change",
            target=customer.key, fields=sorted(changed),
        )  # fmt: skip
    return customer


def delete_customer(actor: Actor, customer: Customer) -> None:
    """Delete a customer with its contacts, links, interactions and tickets (Admin); its agents
    stay in the registry, owned by no one."""
    actor.require(roles.MANAGE, "delete customers")
    with transaction.atomic():
        key = customer.key
        customer.delete()
        record_audit(actor, "helpdesk.customer.delete", target=key)


def save_contacts(actor: Actor, customer: Customer, changed: list[str]) -> None:
    """Audit a change to a customer's contacts (the admin saved them)."""
    actor.require(roles.MANAGE, "change customers' contacts")
    record_audit(actor, "helpdesk.contacts.change", target=customer.key, contacts=changed)
