"""Finding customers: one by its key, and search as you type.

Search looks at the company name, domain and billing email, every contact's name and email, the
customer's agents (slug and name) and its tickets' numbers. It is fuzzy (pg_trgm strict word
similarity, so "acme corp", "acm" and "acne" all find Acme Corp) and ranked: an exact match of
the whole text first, then a prefix, then by similarity, with each hit saying which field
matched. One SQL statement per search, served by the trigram indexes, whatever the number of
customers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from django.db import connection, transaction
from django.db.models import Count

from helpdesk.models import KEY_MAX, Customer
from helpdesk.refusals import HelpdeskRefused
from portal import roles
from portal.actors import Actor
from portal.services import audits_refusals, record_audit

SEARCH_MAX_CHARS = 100
SEARCH_LIMIT = 20
SEARCH_LIMIT_MAX = 100
# Strict word similarity (0..1) a fuzzy hit needs: pg_trgm's default (0.5) misses one-letter
# typos in short words ("acne" for "acme"). Strict, so that whole words are compared: "acne corp"
# is nearer "Acme Corp" than "Wayne Corp".
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


# Search runs in tiers, each one statement over every source (a UNION ALL of one branch per
# field, each with its own LIMIT), and stops at the first tier that found enough customers:
#   1. exact or prefix matches of the whole field, by the ``lower(field)`` pattern index in
#      order (so the exact match, the shortest, comes first): score 3 exact, 2 prefix;
#   2. the text inside the field (a word of it, a part of an email), by the GIN trigram index:
#      1 + the similarity;
#   3. only when nothing was found yet, fuzzy (typos): the strict word similarity, by the same
#      index.
# A branch answers (customer id, score, field, matched text).
_SOURCES = [
    ("helpdesk_customer", "id", "company_name", "company"),
    ("helpdesk_customer", "id", "domain", "domain"),
    ("helpdesk_customer", "id", "email", "email"),
    ("helpdesk_contact", "customer_id", "name", "contact"),
    ("helpdesk_contact", "customer_id", "email", "contact"),
    ("helpdesk_ticket", "customer_id", "number", "ticket"),
]
# Customers' agents: few beside the customers' own rows (one or a few each), read by a join.
_AGENT_COLUMNS = ("slug", "name")
_AGENTS = "helpdesk_customeragent link JOIN agents_agent a ON a.id = link.agent_id"

_PREFIX = """(SELECT {id}, CASE WHEN lower({col}) = %(exact)s THEN 3.0 ELSE 2.0 END, '{field}', {col}
      FROM {table} WHERE lower({col}) LIKE %(prefix)s ORDER BY lower({col}) LIMIT %(limit)s)"""
_INSIDE = """(SELECT {id}, 1.0 + strict_word_similarity(%(exact)s, lower({col})) AS s, '{field}', {col}
      FROM {table} WHERE {col} ILIKE %(contains)s ORDER BY s DESC LIMIT %(limit)s)"""
_FUZZY = """(SELECT {id}, strict_word_similarity(%(exact)s, lower({col})) AS s, '{field}', {col}
      FROM {table} WHERE %(exact)s <<%% {col} ORDER BY s DESC LIMIT %(limit)s)"""


# Typos are looked for in names only: emails, domains, slugs and ticket numbers are typed whole.
_NAMES = {"company_name", "name"}


def _tier(branch: str, columns: set[str] | None = None) -> str:
    parts = [
        branch.format(table=t, id=i, col=c, field=f)
        for t, i, c, f in _SOURCES
        if columns is None or c in columns
    ]
    parts += [
        branch.format(table=_AGENTS, id="link.customer_id", col=f"a.{column}", field="agent")
        for column in _AGENT_COLUMNS
        if columns is None or column in columns
    ]
    return " UNION ALL ".join(parts)


# (SQL, the shortest text it helps with: a trigram index cannot help with one or two letters)
TIERS = [(_tier(_PREFIX), 1), (_tier(_INSIDE), 3), (_tier(_FUZZY, _NAMES), 3)]
FUZZY = 2


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
    params: dict[str, Any] = {
        "exact": exact,
        "prefix": f"{like}%",
        "contains": f"%{like}%",
        "limit": limit,
    }
    best: dict[int, tuple[float, str, str]] = {}
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL pg_trgm.strict_word_similarity_threshold = %s", [SIMILARITY])
        for tier, (sql, shortest) in enumerate(TIERS):
            if len(exact) < shortest or (tier == FUZZY and best):
                continue
            cursor.execute(sql, params)
            for customer_id, score, field, matched in cursor.fetchall():
                if customer_id not in best or score > best[customer_id][0]:
                    best[customer_id] = (float(score), field, matched)
            if len(best) >= limit:
                break
    ranked = sorted(best.items(), key=lambda item: (-item[1][0], item[0]))[:limit]
    found = Customer.objects.filter(id__in=[cid for cid, _ in ranked]).annotate(
        agents_count=Count("links")
    )
    by_id = {customer.id: customer for customer in found}
    return [
        Hit(by_id[cid], score, field, matched, by_id[cid].agents_count)
        for cid, (score, field, matched) in ranked
        if cid in by_id
    ]


# --- changing customers (the admin's door) -----------------------------------------------------


@audits_refusals("helpdesk.customer.change", target="customer")
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


@audits_refusals("helpdesk.customer.delete", target="customer")
def delete_customer(actor: Actor, customer: Customer) -> None:
    """Delete a customer with its contacts, links, interactions and tickets (Admin); its agents
    stay in the registry, owned by no one."""
    actor.require(roles.MANAGE, "delete customers")
    with transaction.atomic():
        key = customer.key
        customer.delete()
        record_audit(actor, "helpdesk.customer.delete", target=key)


@audits_refusals("helpdesk.contacts.change", target="customer")
def save_contacts(actor: Actor, customer: Customer, changed: list[str]) -> None:
    """Audit a change to a customer's contacts (the admin saved them)."""
    actor.require(roles.MANAGE, "change customers' contacts")
    record_audit(actor, "helpdesk.contacts.change", target=customer.key, contacts=changed)
