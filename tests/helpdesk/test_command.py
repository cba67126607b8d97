"""``manage.py helpdesk search|show|load-demo``: the same answers as the API, refusals as exit
status 2, and a demo data set that loads once."""

from __future__ import annotations

import io
import json

import pytest
from django.core.management import CommandError, call_command

from agents.models import Agent
from helpdesk.models import Customer, CustomerAgent, Interaction


def run(*args: str) -> str:
    out = io.StringIO()
    call_command("helpdesk", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def refused(*args: str) -> str:
    with pytest.raises(CommandError) as error:
        run(*args)
    assert error.value.returncode == 2
    return str(error.value)


def test_search_prints_the_customers_best_first(acme):
    assert "acme-corp" in run("search", "acme")
    data = json.loads(run("search", "acme", "--json"))
    assert data["customers"][0]["customer_id"] == "acme-corp"


def test_show_prints_a_customer_and_its_interactions(acme):
    text = run("show", "acme-corp")
    assert "Acme Corp" in text and "wile@acme.com" in text
    assert json.loads(run("show", "acme-corp", "--json"))["customer"]["company_name"] == "Acme Corp"


def test_an_unknown_customer_is_refused(db):
    assert "No customer has the id 'nobody'" in refused("show", "nobody")


def test_a_viewer_may_search_but_not_load_the_demo(acme, viewer):
    assert "acme-corp" in run("search", "acme", "--as", viewer.username)
    assert "Admin" in refused("load-demo", "--as", viewer.username)
    assert Customer.objects.count() == 1


def test_load_demo_loads_once(db):
    first = json.loads(run("load-demo", "--customers", "30", "--json"))
    assert first["customers"] == 30 and first["agents"] >= 3 and first["interactions"] > 0
    acme = Customer.objects.get(key="acme-corp")
    assert sorted(acme.links.values_list("agent__slug", flat=True)) == [
        "acme-assistant", "acme-data", "acme-memory",
    ]  # fmt: skip
    assert Agent.objects.get(slug="acme-assistant").tier == "customer"
    counts = (Customer.objects.count(), CustomerAgent.objects.count(), Interaction.objects.count())

    assert "nothing to add" in run("load-demo", "--customers", "30")
    assert (
        Customer.objects.count(),
        CustomerAgent.objects.count(),
        Interaction.objects.count(),
    ) == counts


@pytest.mark.parametrize("count", ["0", "5000", "-3"])
def test_load_demo_refuses_a_silly_count(db, count):
    assert "1 to 2000" in refused("load-demo", "--customers", count)
    assert Customer.objects.count() == 0
