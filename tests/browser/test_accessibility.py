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
    signed_out = ["/login/"]
    pages = [
        *(section.href for section in SECTIONS),
        "/agents/?view=table",
        "/agents/wow-cache/",
        "/agents/wow-event/history/",
        "/agents/bulk/",
        f"/agents/bulk/{bulk_id}/",
        "/logs/?agent=wow-cache",
        "/profile/",
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
