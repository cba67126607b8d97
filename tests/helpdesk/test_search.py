"""Customer search: fuzzy, ranked, across company, domain, email, contacts, agents and
tickets; bad input refused with what to do."""

from __future__ import annotations

import pytest

from helpdesk import customers
from helpdesk.models import Contact, Ticket
from helpdesk.refusals import HelpdeskRefused
from tests.helpdesk.conftest import make_customer


@pytest.fixture
def directory(acme):
    make_customer("acme-labs", "Acme Laboratories")
    make_customer("globex", "Globex Corporation", domain="globex.io")
    initech = make_customer("initech", "Initech", email="peter@initech.com")
    Contact.objects.create(customer=initech, name="Bill Lumbergh", email="bill@initech.com")
    Ticket.objects.create(
        customer=initech, system="zendesk", external_id="4312", number="ZD-4312", subject="Down"
    )
    return acme


def keys(hits) -> list[str]:
    return [hit.customer.key for hit in hits]


def test_an_exact_company_name_ranks_first(directory, viewer_actor):
    hits = customers.search_customers(viewer_actor, "acme corp")
    assert keys(hits)[0] == "acme-corp"
    assert hits[0].matched == "company"


def test_a_prefix_finds_every_company_that_starts_with_it(directory, viewer_actor):
    assert set(keys(customers.search_customers(viewer_actor, "acm"))) >= {"acme-corp", "acme-labs"}


def test_a_typo_still_finds_the_customer(directory, viewer_actor):
    assert "acme-corp" in keys(customers.search_customers(viewer_actor, "acne corp"))


def test_contacts_domains_and_tickets_are_searched(directory, viewer_actor):
    assert keys(customers.search_customers(viewer_actor, "lumbergh"))[0] == "initech"
    assert keys(customers.search_customers(viewer_actor, "globex.io"))[0] == "globex"
    hit = customers.search_customers(viewer_actor, "ZD-4312")[0]
    assert (hit.customer.key, hit.matched) == ("initech", "ticket")


def test_nothing_matching_answers_nothing(directory, viewer_actor):
    assert customers.search_customers(viewer_actor, "zzzzqqqq") == []
    assert customers.search_customers(viewer_actor, "   ") == []


@pytest.mark.parametrize(
    ("q", "says"),
    [("a\x00b", "NUL"), ("x" * 101, "at most 100"), (["acme"], "must be text")],
)
def test_bad_search_text_is_refused(directory, viewer_actor, q, says):
    with pytest.raises(HelpdeskRefused) as refused:
        customers.search_customers(viewer_actor, q)
    assert refused.value.code == "invalid"
    assert says in refused.value.message


def test_wildcards_in_the_text_are_literal(directory, viewer_actor):
    assert customers.search_customers(viewer_actor, "%") == []
    assert customers.search_customers(viewer_actor, "_") == []


def test_someone_without_a_role_cannot_search(directory, outsider_actor):
    from django.core.exceptions import PermissionDenied

    with pytest.raises(PermissionDenied):
        customers.search_customers(outsider_actor, "acme")
