"""The accessibility audit (issue 20): axe-core, vendored from npm, runs over every page of the
portal in both themes and finds no serious or critical violation; a flow works by keyboard only;
toasts and live areas announce politely."""

from __future__ import annotations

from pathlib import Path

from playwright.sync_api import expect

from agents import bulk, services
from observability import alerts
from portal.actors import Actor
from portal.navigation import SECTIONS

COMMAND = Actor.command("test")
AXE = Path(__file__).parent / "vendor" / "axe-core" / "axe.min.js"
THEMES = ("dark", "light")


def _axe(page) -> list[dict]:
    """Serious and critical violations of the page as it is now."""
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        page.add_script_tag(path=str(AXE))
    results = page.evaluate(
        """async () => {
             const r = await axe.run(document, {resultTypes: ["violations"]});
             return r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
               nodes: v.nodes.filter(n => ["serious", "critical"].includes(n.impact)).map(n => ({
                 target: n.target.join(" "), summary: n.failureSummary, html: n.html}))}));
           }"""
    )
    return [v for v in results if v["nodes"]]


def _report(path: str, theme: str, violations: list[dict]) -> list[str]:
    lines = []
    for v in violations:
        for node in v["nodes"][:8]:
            summary = " ".join((node["summary"] or "").split())[:240]
            lines.append(
                f"{path} [{theme}] {v['id']} ({v['impact']}): {node['target']}: {summary}"
                f" | {node['html'][:200]}"
            )
        if len(v["nodes"]) > 8:
            lines.append(f"{path} [{theme}] {v['id']}: ... {len(v['nodes']) - 8} more")
    return lines


def _set_theme(page, theme: str) -> None:
    page.evaluate("t => localStorage.setItem('waooaw-theme', t)", theme)


def _audit(page, paths: list[str], theme: str) -> list[str]:
    problems: list[str] = []
    for path in paths:
        page.goto(path)
        expect(page.locator("html")).to_have_attribute("data-theme", theme)
        page.wait_for_load_state("load")
        # Graphs are laid out after load: audit them drawn, as a reader sees them.
        page.wait_for_function(
            """() => [...document.querySelectorAll("figure[data-graph]")].every(
                 f => ["drawn", "empty", "failed"].includes(f.dataset.graphState))"""
        )
        page.wait_for_timeout(250)  # transitions end
        problems += _report(path, theme, _axe(page))
    return problems


def test_every_page_has_no_serious_accessibility_violation_in_either_theme(
    page, sign_in_as, operator, transactional_db, settings, tmp_path
) -> None:
    settings.AGENT_ROOT = tmp_path
    services.seed_platform_agents(COMMAND)
    alerts.ensure_default_rules(COMMAND)
    bulk_id = bulk.create_bulk_operation(
        "deploy", COMMAND, targets=["wow-search", "wow-support"], enqueue=False
    ).pk
    # Detail pages with something on them: an open error, a firing alert, a customer.
    from django.db import transaction

    from agents import errors
    from agents.models import Agent
    from helpdesk.models import CustomerAgent
    from observability.models import Alert
    from tests.helpdesk.conftest import make_customer

    with transaction.atomic():
        error = errors.record_error(Agent.objects.get(slug="wow-scaling"), "test", "it fell over")
    Agent.objects.filter(slug="wow-analytics").update(state="ERRORED")
    alerts.evaluate()
    alert_id = Alert.objects.order_by("-pk").values_list("pk", flat=True)[0]
    customer = make_customer("acme-corp", "Acme Corp")
    CustomerAgent.objects.create(customer=customer, agent=Agent.objects.get(slug="wow-support"))
    # A factory draft of the operator's own, and a workflow run.
    from agents.workflows import services as workflows
    from factory.models import Template
    from factory.services import drafts, templates

    templates.seed_templates(COMMAND)
    as_operator = Actor(kind="user", user=operator)
    draft = drafts.create_draft(
        Template.objects.filter(key="memory").latest("version"), as_operator
    )
    run = workflows.start(COMMAND, "customer-onboarding", {"customer_name": "Acme Corp"})
    signed_out = ["/login/"]
    pages = [
        *(section.href for section in SECTIONS),
        "/agents/?view=table",
        "/agents/wow-cache/",
        "/agents/wow-event/history/",
        "/agents/bulk/",
        f"/agents/bulk/{bulk_id}/",
        f"/agents/errors/{error.pk}/",
        f"/alerts/{alert_id}/",
        "/logs/?agent=wow-cache",
        "/queues/wow-cache/",
        "/helpdesk/customers/acme-corp/",
        "/audit/report",
        "/profile/",
        *(f"/factory/drafts/{draft.pk}/{step}/" for step in ("configure", "resources", "review")),
        "/workflows/definitions/",
        f"/workflows/{run.pk}/",
    ]
    problems: list[str] = []
    for theme in THEMES:
        page.goto("/login/")
        _set_theme(page, theme)
        problems += _audit(page, signed_out, theme)
    sign_in_as(operator)
    for theme in THEMES:
        _set_theme(page, theme)
        problems += _audit(page, pages, theme)
    assert not problems, f"{len(problems)} serious or critical violations:\n" + "\n".join(problems)


def _focused(page) -> str:
    return page.evaluate(
        """() => { const e = document.activeElement;
             return e.id || e.getAttribute("aria-label") || e.textContent.trim().slice(0, 40); }"""
    )


def test_a_flow_by_keyboard_alone_with_focus_visible_in_both_themes(
    page, sign_in_as, operator, transactional_db, settings, tmp_path
) -> None:
    settings.AGENT_ROOT = tmp_path
    services.seed_platform_agents(COMMAND)
    sign_in_as(operator)
    page.goto("/agents/")
    expect(page.locator("#live-indicator")).to_have_attribute("data-state", "live")

    # The first Tab reaches the skip link, shown while focused; Enter moves to the content.
    page.keyboard.press("Tab")
    skip = page.locator(".skip-link")
    expect(skip).to_be_focused()
    expect(skip).to_have_text("Skip to content")
    assert skip.bounding_box()["y"] >= 0, "the skip link is shown when focused"
    page.keyboard.press("Enter")
    expect(page.locator("main#content")).to_be_focused()

    # Focus is visible in both themes: the focused control has an outline.
    for theme in THEMES:
        page.evaluate("t => document.documentElement.dataset.theme = t", theme)
        summary = page.locator("#agent-wow-cache summary", has_text="Actions")
        summary.focus()
        style = summary.evaluate(
            "e => { const s = getComputedStyle(e); return [s.outlineStyle, s.outlineWidth]; }"
        )
        assert style[0] != "none" and style[1] != "0px", f"{theme}: no visible focus: {style}"

    # The card's actions menu opens with Enter and closes with Escape, focus back on its button.
    summary = page.locator("#agent-wow-cache summary", has_text="Actions")
    summary.focus()
    page.keyboard.press("Enter")
    menu = page.locator("#agent-wow-cache details.menu")
    expect(menu).to_have_attribute("open", "")
    problems = _report("/agents/ (an actions menu open)", "light", _axe(page))
    page.keyboard.press("Tab")
    expect(page.locator("#agent-wow-cache [role=menuitem]").first).to_be_focused()
    page.keyboard.press("Escape")
    expect(menu).not_to_have_attribute("open", "")
    expect(summary).to_be_focused()

    # An action by keyboard: open the menu, Tab to Provision, Enter opens the confirmation; Escape
    # cancels it and focus returns to the menu's button; then confirm it with the keyboard.
    page.keyboard.press("Enter")
    provision = page.locator("#agent-wow-cache").get_by_role("menuitem", name="Provision")
    for _ in range(10):
        page.keyboard.press("Tab")
        if provision.evaluate("e => e === document.activeElement"):
            break
    expect(provision).to_be_focused()
    page.keyboard.press("Enter")
    dialog = page.locator("#modal dialog")
    expect(dialog).to_be_visible()
    problems += _report("/agents/ (a confirmation open)", "light", _axe(page))
    assert not problems, "\n".join(problems)
    page.keyboard.press("Escape")
    expect(dialog).not_to_be_visible()
    expect(summary).to_be_focused()
    page.keyboard.press("Enter")
    for _ in range(10):
        page.keyboard.press("Tab")
        if provision.evaluate("e => e === document.activeElement"):
            break
    page.keyboard.press("Enter")
    expect(dialog).to_be_visible()
    confirm = dialog.get_by_role("button", name="Provision", exact=True)
    for _ in range(10):
        if confirm.evaluate("e => e === document.activeElement"):
            break
        page.keyboard.press("Tab")
    expect(confirm).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator("#toasts")).to_contain_text("Provision WowCache")
    expect(page.locator("#toasts .toast").last).to_have_attribute("role", "status")
    assert _focused(page) != "", "focus went somewhere after the dialog closed"


def test_toasts_and_live_areas_announce_politely(page, sign_in_as, operator) -> None:
    sign_in_as(operator)
    page.goto("/")
    expect(page.locator("#toasts")).to_have_attribute("aria-live", "polite")
    indicator = page.locator("#live-indicator")
    expect(indicator).to_have_attribute("role", "status")
    expect(indicator).to_have_attribute("aria-live", "polite")
    expect(page.locator("[aria-live=assertive]")).to_have_count(0)
