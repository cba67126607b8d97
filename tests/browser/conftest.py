"""Browser tests: Daphne serving the real ASGI app on the test database, driven by Playwright
in Debian's Chromium (never a downloaded browser).

Without Chromium the tests are skipped, except under CI=true, where CI has installed it and a
missing browser is a failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "test-results" / "screenshots"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
]


def pytest_collection_modifyitems(items) -> None:
    for item in items:
        if "tests/browser/" in str(item.fspath):
            item.add_marker(pytest.mark.browser)
            # With xdist (`-n 2 --dist loadgroup`, as `make test` runs) every browser test goes
            # to one worker, in this order, after one another as in a serial run: they share
            # that worker's portal, Celery worker and agents, and a page must not receive the
            # pushes of another story's agents.
            item.add_marker(pytest.mark.xdist_group("browser"))
    # Browser tests last: their session-wide Playwright loop relaxes Django's async-safety check.
    items.sort(key=lambda item: "tests/browser/" in str(item.fspath))


@pytest.fixture(scope="session")
def chromium_path() -> str:
    path = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).exists():
        if os.environ.get("CI") == "true":
            pytest.fail(
                "CI=true but Chromium is missing; .ci/run installs Debian's chromium package."
            )
        pytest.skip("Chromium is not installed (apt-get install chromium); CI runs these tests.")
    return path


@pytest.fixture(scope="session")
def browser(chromium_path: str):
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop running in this thread for the whole session;
    # the ORM calls tests make here are still plain synchronous calls, so allow them.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    playwright = sync_playwright().start()
    chromium = playwright.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
    yield chromium
    chromium.close()
    playwright.stop()
    os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)


@pytest.fixture
def page(browser, portal_server, transactional_db):
    """A fresh browser context (no cookies, no storage) on the running portal."""
    context = browser.new_context(base_url=portal_server, viewport={"width": 1366, "height": 860})
    context.set_default_timeout(10_000)
    page = context.new_page()
    yield page
    context.close()


@pytest.fixture
def screenshot():
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    def take(page, name: str) -> Path:
        path = SCREENSHOTS / f"{name}.png"
        page.screenshot(path=str(path), full_page=False)
        return path

    return take


@pytest.fixture
def sign_in_as(page, password):
    def sign_in(user) -> None:
        from django.contrib.auth.hashers import make_password

        # The server runs the real settings, which do not accept the tests' fast hasher.
        user.password = make_password(password, hasher="pbkdf2_sha256")
        user.save(update_fields=["password"])
        page.goto("/login/")
        page.get_by_label("Email or username").fill(user.get_username())
        page.get_by_label("Password").fill(password)
        page.get_by_role("button", name="Sign in", exact=True).click()
        page.wait_for_url("**/")

    return sign_in


# --- a real Celery worker for pages whose actions run in the background -------------------------


def _kill_processes_under(root: Path) -> None:
    """SIGKILL every process whose command line names ``root``: the agents a worker started."""
    import psutil

    marker = str(root)
    for process in psutil.process_iter(["cmdline"]):
        try:
            if any(marker in part for part in process.info["cmdline"] or []):
                process.kill()
        except psutil.Error:
            pass


@pytest.fixture
def agents_root(settings, tmp_path_factory):
    """Agents this test process runs (real processes on the local runtime), killed afterwards."""
    root = tmp_path_factory.mktemp("agents")
    settings.AGENT_ROOT = root
    yield root
    _kill_processes_under(root)


@pytest.fixture(scope="session")
def fake_zendesk_port() -> int:
    """The port the help desk's story starts its fake Zendesk on: the worker (started once for
    the session) is pointed at it from the start, so the ticket it sends reaches the fake."""
    from portal import embedded

    return embedded.free_port()


def zendesk_environment(port: int) -> dict[str, str]:
    from tests.helpdesk.tickets_kit import EMAIL, TOKEN, ZENDESK_SECRET

    return {"ZENDESK_URL": f"http://127.0.0.1:{port}", "ZENDESK_EMAIL": EMAIL,
            "ZENDESK_API_TOKEN": TOKEN, "ZENDESK_WEBHOOK_SECRET": ZENDESK_SECRET}  # fmt: skip


@pytest.fixture(scope="session")
def celery_worker_process(
    test_database_url: str, redis_url: str, tmp_path_factory, fake_zendesk_port: int
):
    """``celery -A portal worker`` on the test database and Redis; yields the agent root where
    the agents it starts keep their files (their command lines name it)."""
    from portal.celery import app as celery_app

    agent_root = tmp_path_factory.mktemp("worker-agents")
    sandbox_root = tmp_path_factory.mktemp("worker-sandboxes")  # the factory's sandbox runs
    env = {
        **os.environ,
        "DATABASE_URL": test_database_url,
        "REDIS_URL": redis_url,
        "AGENT_REDIS_URL": redis_url,
        "AGENT_ROOT": str(agent_root),
        "FACTORY_SANDBOX_ROOT": str(sandbox_root),
        # Upgrades' data snapshots, kept out of the project's var/ (a dev portal's are there).
        "SERVICING_BACKUP_ROOT": str(tmp_path_factory.mktemp("worker-backups")),
        "LOG_LEVEL": "WARNING",
        "PYTHONUNBUFFERED": "1",
        **zendesk_environment(fake_zendesk_port),
    }
    # Work queued by earlier tests' requests is not for this worker.
    celery_app.control.purge()
    log = open(tmp_path_factory.mktemp("celery") / "worker.log", "w+")  # noqa: SIM115 (open while it runs)
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "portal", "worker", "--pool", "solo", "--concurrency", "1",
         "--without-mingle", "--without-gossip", "--hostname", f"browser-tests-{os.getpid()}@%h"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while not celery_app.control.ping(
        destination=[f"browser-tests-{os.getpid()}@{os.uname().nodename}"], timeout=0.5
    ):
        if time.monotonic() > deadline or worker.poll() is not None:
            log.seek(0)
            worker.kill()
            pytest.fail(f"The Celery worker did not come up:\n{log.read()[-3000:]}")
    yield agent_root
    worker.terminate()
    try:
        worker.wait(timeout=15)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait(timeout=5)
    _kill_processes_under(agent_root)
    _kill_processes_under(sandbox_root)
    log.close()


@pytest.fixture
def agent_worker(celery_worker_process: Path):
    """The running worker, and a clean agent root after the test (its database rows are gone)."""
    yield celery_worker_process
    _kill_processes_under(celery_worker_process)
    for child in celery_worker_process.iterdir():
        if child.is_dir():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


# --- the help desk: a Daphne with Zendesk on and the worker's agent root, a fake Zendesk -------


@pytest.fixture
def helpdesk_portal(serve_portal, test_database_url, redis_url, agent_worker, tmp_path,
                    fake_zendesk_port):  # fmt: skip
    """Daphne with the worker's agent root (a scale from the page starts replicas there) and
    Zendesk pointed at the fake's port, as the worker is."""
    env = {
        **os.environ, "DATABASE_URL": test_database_url, "REDIS_URL": redis_url,
        "AGENT_ROOT": str(agent_worker), "LOG_LEVEL": "WARNING", "JIRA_URL": "",
        **zendesk_environment(fake_zendesk_port),
    }  # fmt: skip
    with serve_portal(env, tmp_path) as base:
        yield base


@pytest.fixture
def fake_zendesk(fake_zendesk_port, helpdesk_portal):
    """A fake Zendesk (real HTTP) where the worker and the portal send, calling the portal's
    webhook when a person changes a ticket on it (``POST /_fake/change``)."""
    from tests.helpdesk.tickets_kit import HOOK_PATH, FakeZendesk

    fake = FakeZendesk()
    fake.start(fake_zendesk_port)
    fake.webhook_url = helpdesk_portal + HOOK_PATH.format(system="zendesk")
    yield fake
    fake.stop()


def wait_for(condition, timeout: float, what: str):
    """``condition()`` once it is true (polled every 0.25 s); fails the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.25)
    pytest.fail(f"waited {timeout:.0f} s for {what}")
