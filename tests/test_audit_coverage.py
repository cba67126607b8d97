"""Every function of the apps that takes an ``actor`` and writes to the database records an
audit entry: it calls ``record_audit`` itself, or calls a function that does. Read from the
source (the AST), so a new service function cannot forget it unnoticed; the few exceptions are
listed with the reason. (Each door's own tests check the entries a request writes.)

The scan also names every mutating function (one that takes an ``actor`` and writes, or calls a
function that audits); each app's ``test_audit_walk.py`` must call each of them for real
(``tests/audit_kit.py``) or say in its ``NOT_WALKED`` why it is not an action of its own."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
APPS = ("portal", "agents", "observability", "factory", "servicing", "helpdesk")
WRITES = {"save", "create", "update", "delete", "bulk_create", "bulk_update", "get_or_create",
          "update_or_create"}  # fmt: skip
DOORS = ("views", "admin", "api", "cli", "commands")  # they call the services, which audit
EXEMPT = {
    # The wizard saves a draft as its owner types; making one and abandoning it are audited.
    "factory.services.drafts.move_to": "a user's own draft",
    "factory.services.drafts.set_fields": "a user's own draft",
    # Quick actions run through helpdesk.actions.services.run_action, which audits each one.
    "helpdesk.actions.account.reset_trial": "audited by run_action",
    "helpdesk.actions.cache.clear_cache": "audited by run_action",
    "helpdesk.actions.grants.revoke_access": "audited by run_action",
}


def _sources() -> dict[str, str]:
    sources = {}
    for app in APPS:
        for path in (ROOT / app).rglob("*.py"):
            if "migrations" not in path.parts:
                module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
                sources[module] = path.read_text()
    return sources


def _functions(sources: dict[str, str]) -> dict[str, tuple[list[str], set[str], bool, bool]]:
    """Each function: its parameters, the names it calls, whether it writes, whether it audits."""
    found = {}
    for module, source in sources.items():
        for node in ast.walk(ast.parse(source)):
            if not isinstance(node, ast.FunctionDef):
                continue
            calls: set[str] = set()
            writes = audits = False
            for sub in ast.walk(node):
                if not isinstance(sub, ast.Call):
                    continue
                func = sub.func
                name = getattr(func, "attr", None) or getattr(func, "id", "")
                calls.add(name)
                writes |= isinstance(func, ast.Attribute) and name in WRITES
                audits |= name == "record_audit"
            args = [a.arg for a in (*node.args.args, *node.args.kwonlyargs)]
            found[f"{module}.{node.name}"] = (args, calls, writes, audits)
    return found


def unaudited(sources: dict[str, str]) -> list[str]:
    functions = _functions(sources)
    audited = {name.rsplit(".", 1)[1] for name, (_, _, _, audits) in functions.items() if audits}
    return sorted(
        name
        for name, (args, calls, writes, audits) in functions.items()
        if "actor" in args and writes and not audits and not calls & audited
        and not name.rsplit(".", 1)[1].startswith("_")
        and not any(door in name.split(".") for door in DOORS)
        and name not in EXEMPT
    )  # fmt: skip


def test_every_function_that_acts_for_someone_and_writes_is_audited():
    missing = unaudited(_sources())
    assert not missing, f"write an audit entry (record_audit) in: {missing}"


def test_the_scan_flags_a_writer_that_does_not_audit_and_passes_one_that_does():
    sources = {
        "agents.services.extra": (
            "def quietly(agent, actor):\n    agent.save()\n\n"
            "def loudly(agent, actor):\n    agent.save()\n    record_audit(actor, 'x')\n\n"
            "def through(agent, actor):\n    agent.delete()\n    loudly(agent, actor)\n\n"
            "def reading(agent, actor):\n    return agent.name\n"
        )
    }
    assert unaudited(sources) == ["agents.services.extra.quietly"]
    assert set(EXEMPT) <= set(_functions(_sources()))  # no stale exemption


def mutating(sources: dict[str, str]) -> set[str]:
    """The public service functions that change something for an actor."""
    functions = _functions(sources)
    audited = {name.rsplit(".", 1)[1] for name, (_, _, _, audits) in functions.items() if audits}
    return {
        name
        for name, (args, calls, writes, audits) in functions.items()
        if "actor" in args and (writes or audits or calls & audited)
        and not name.rsplit(".", 1)[1].startswith("_")
        and not any(door in name.split(".") for door in DOORS)
    }  # fmt: skip


def walked() -> tuple[dict[str, set[str]], dict[str, str]]:
    """Per walk file, the functions its recipes call; and every ``NOT_WALKED`` name's reason."""
    recipes: dict[str, set[str]] = {}
    not_walked: dict[str, str] = {}
    for app in APPS:
        path = ROOT / "tests" / app / "test_audit_walk.py"
        tree = ast.parse(path.read_text())
        recipes[app] = {
            decorator.args[0].value
            for node in ast.walk(tree)
            if isinstance(node, ast.FunctionDef)
            for decorator in node.decorator_list
            if isinstance(decorator, ast.Call) and getattr(decorator.func, "id", "") == "walk"
        }
        for node in tree.body:
            if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "NOT_WALKED":
                not_walked.update(ast.literal_eval(node.value))
    return recipes, not_walked


def test_the_audit_walk_calls_every_mutating_function():
    recipes, not_walked = walked()
    found = mutating(_sources())
    covered = set().union(*recipes.values()) | set(not_walked)
    assert not found - covered, (
        f"add a recipe to the app's test_audit_walk.py for: {sorted(found - covered)}"
    )
    assert not covered - found, f"stale recipes or NOT_WALKED names: {sorted(covered - found)}"
    for app, names in recipes.items():
        strays = sorted(name for name in names if name.split(".")[0] != app)
        assert not strays, f"tests/{app}/test_audit_walk.py walks another app's functions: {strays}"
    assert all(reason.strip() for reason in not_walked.values())
