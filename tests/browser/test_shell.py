"""The UI shell in a real browser: sign-in, sidebar, theme that persists, 375 px layout, sign-out."""

from __future__ import annotations

import re

from playwright.sync_api import expect


def test_sign_in_shows_the_dark_shell_with_user_and_role(
    page, sign_in_as, operator, screenshot
) -> None:
    sign_in_as(operator)
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()
    expect(page.locator("html")).to_have_attribute("data-theme", "dark")
    expect(page.locator(".user-name")).to_have_text("otto")
    expect(page.locator(".role")).to_have_text("Operator")
    nav = page.get_by_role("navigation")
    for title in (
        "Dashboard",
        "Agents",
        "Logs",
        "Alerts",
        "Events",
        "Metrics",
        "Queues",
        "Workflows",
        "Factory",
        "Servicing",
        "Help Desk",
    ):
        expect(nav.get_by_role("link", name=title, exact=True)).to_be_visible()
    background = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(10, 10, 10)"
    screenshot(page, "shell-dark-desktop")


def test_light_theme_persists_across_pages_and_reloads(page, sign_in_as, admin, screenshot) -> None:
    sign_in_as(admin)
    page.get_by_role("button", name="Switch to light theme").click()
    expect(page.locator("html")).to_have_attribute("data-theme", "light")
    page.get_by_role("link", name="Metrics", exact=True).click()
    expect(page.get_by_role("heading", name="Metrics", exact=True)).to_be_visible()
    expect(page.locator("html")).to_have_attribute("data-theme", "light")
    page.reload()
    expect(page.locator("html")).to_have_attribute("data-theme", "light")
    page.get_by_role("link", name="Dashboard", exact=True).click()
    screenshot(page, "shell-light-desktop")
    page.get_by_role("button", name="Switch to dark theme").click()
    expect(page.locator("html")).to_have_attribute("data-theme", "dark")


def test_mobile_layout_at_375_px(page, sign_in_as, viewer, screenshot) -> None:
    page.set_viewport_size({"width": 375, "height": 812})
    sign_in_as(viewer)
    sidebar = page.locator("#sidebar")
    expect(sidebar).not_to_be_in_viewport()
    assert page.evaluate("document.documentElement.scrollWidth") <= 375, "no sideways scrolling"
    screenshot(page, "shell-dark-375")
    page.get_by_role("button", name="Open navigation").click()
    expect(sidebar).to_be_in_viewport(ratio=1)
    screenshot(page, "shell-dark-375-menu")
    page.get_by_role("link", name="Alerts", exact=True).click()
    expect(page).to_have_url(re.compile(r"/alerts/$"))
    expect(sidebar).not_to_be_in_viewport()
    page.get_by_role("button", name="Switch to light theme").click()
    screenshot(page, "shell-light-375")


def test_sign_out_returns_to_the_login_page(page, sign_in_as, viewer) -> None:
    sign_in_as(viewer)
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(re.compile(r"/login/$"))
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/login/\?next=/$"))


def test_wrong_password_is_explained(page, viewer, screenshot) -> None:
    page.goto("/login/")
    page.get_by_label("Email or username").fill("vera")
    page.get_by_label("Password").fill("wrong")
    page.get_by_role("button", name="Sign in", exact=True).click()
    expect(page.get_by_role("alert")).to_contain_text("do not match")
    screenshot(page, "login-error")
