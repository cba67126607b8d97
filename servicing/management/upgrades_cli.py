"""``manage.py servicing``'s upgrade subcommands, for on-call engineers and scripts:

servicing upgrade SLUG... --to VERSION [--strategy rolling|blue-green|canary] [--steps 10,50,100]
                  [--gate NAME=VALUE ...] [--replicas N] [--config JSON] [--allow-downgrade]
                  [--restore-data] [--override-window REASON] [--follow] [--json]
servicing upgrades [--agent SLUG] [--status STATUS] [--json]
servicing upgrade-show ID [--json]
servicing promote|pause|resume|abort ID [--reason TEXT]
servicing rollback SLUG [--reason TEXT] [--restore-data] [--follow] [--json]
servicing scale SLUG REPLICAS [--json]
servicing config SLUG (--set JSON [--rollout [--gate NAME=VALUE ...]] | --rollback) [--json]

``--follow`` watches the upgrade's workflow with the shared run watcher (exit 0 only when it
succeeded). Every subcommand calls ``servicing.upgrades.requests`` (or the agents' live config
service), as the API and the pages do.
"""

from __future__ import annotations

import json as jsonlib
from typing import Any

from django.core.management.base import CommandError
from rich.table import Table

from agents import services as agent_services
from agents.management.workflow_cli import follow_run, status_text
from portal import inputs
from portal.cli import dumps
from servicing import services
from servicing.models import Upgrade, UpgradeStatus
from servicing.upgrades import gates, requests
from servicing.upgrades.schemas import upgrade_out

REFUSED = 2
COMMANDS = ("upgrade", "upgrades", "upgrade-show", "promote", "pause", "resume", "abort",
            "rollback", "scale", "config")  # fmt: skip


def add_parsers(sub, common) -> None:
    upgrade = sub.add_parser("upgrade", help="Upgrade agents to a release (Operator).")
    upgrade.add_argument("agents", nargs="+", metavar="SLUG")
    upgrade.add_argument("--to", required=True, dest="target", metavar="VERSION")
    upgrade.add_argument("--strategy", default="rolling", help="rolling, blue-green or canary.")
    upgrade.add_argument("--steps", default=None, help="Canary shares, e.g. 10,50,100.")
    upgrade.add_argument("--gate", action="append", default=[], metavar="NAME=VALUE",
                         help=f"A gate setting; gates: {', '.join(gates.DEFAULT_GATES)}.")  # fmt: skip
    upgrade.add_argument("--replicas", default=None, help="Replicas of the new version.")
    upgrade.add_argument("--config", default=None, metavar="JSON",
                         help="agentd config keys the new version runs with.")  # fmt: skip
    upgrade.add_argument("--allow-downgrade", action="store_true")
    upgrade.add_argument("--restore-data", action="store_true",
                         help="On roll-back, restore the data snapshot too.")  # fmt: skip
    upgrade.add_argument("--override-window", default="", metavar="REASON",
                         help="Admin: upgrade now, outside the maintenance window.")  # fmt: skip
    upgrade.add_argument("--follow", action="store_true", help="Watch it until it ends.")
    common(upgrade)
    listing = sub.add_parser("upgrades", help="Upgrades, newest first.")
    listing.add_argument("--agent", metavar="SLUG")
    listing.add_argument("--status", choices=UpgradeStatus.values)
    common(listing)
    show = sub.add_parser("upgrade-show", help="One upgrade and its A/B table.")
    show.add_argument("upgrade", metavar="ID")
    common(show)
    for action, text in (
        ("promote", "Go on to the next step now."),
        ("pause", "Hold traffic where it is."),
        ("resume", "Resume a paused upgrade."),
        ("abort", "Stop and go back to the old version (not pinned)."),
    ):
        acting = sub.add_parser(action, help=text)
        acting.add_argument("upgrade", metavar="ID")
        acting.add_argument("--reason", default="")
        common(acting)
    rollback = sub.add_parser(
        "rollback", help="Roll an agent back (the upgrade under way, or the last one)."
    )
    rollback.add_argument("agent", metavar="SLUG")
    rollback.add_argument("--reason", default="")
    rollback.add_argument("--restore-data", action="store_true")
    rollback.add_argument("--follow", action="store_true")
    common(rollback)
    scale = sub.add_parser("scale", help="Change an agent's replicas, readiness-gated.")
    scale.add_argument("agent", metavar="SLUG")
    scale.add_argument("replicas", metavar="REPLICAS")
    common(scale)
    config = sub.add_parser("config", help="Patch an agent's live config, or roll it back.")
    config.add_argument("agent", metavar="SLUG")
    how = config.add_mutually_exclusive_group(required=True)
    how.add_argument("--set", dest="patch", metavar="JSON", help="e.g. '{\"task_block_ms\": 500}'")
    how.add_argument("--rollback", action="store_true", help="Put back the previous config.")
    config.add_argument("--rollout", action="store_true",
                        help="With --set: roll it out like a version (replica by replica, "
                        "gated) instead of patching the running replicas at once.")  # fmt: skip
    config.add_argument("--gate", action="append", default=[], metavar="NAME=VALUE")
    common(config)


def handle(command, name: str, options: dict[str, Any]) -> int:
    """Run subcommand ``name``; answers the exit status (0 done)."""
    return globals()[f"_{name.replace('-', '_')}"](command, **options)


def _json_arg(text: str | None, flag: str) -> Any:
    if text is None:
        return None
    try:
        value = jsonlib.loads(text)
    except ValueError as error:
        raise CommandError(
            f"{flag} is not JSON ({error}); give an object such as '{{\"task_block_ms\": 500}}'.",
            returncode=REFUSED,
        ) from None
    if _has_nul(value):  # a "\u0000" escape: PostgreSQL cannot store it (the API refuses it too)
        raise CommandError(f"{flag} {inputs.NUL_REASON}", returncode=REFUSED)
    return value


def _has_nul(value: object) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(key) or _has_nul(item) for key, item in value.items())
    if isinstance(value, list):
        return any(_has_nul(item) for item in value)
    return False


def _gates(pairs: list[str]) -> dict[str, float]:
    settings: dict[str, float] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        try:
            number = float(value)
        except ValueError:
            number = None
        if not sep or number is None:
            raise CommandError(f"--gate {pair[:40]!r}: use NAME=NUMBER, e.g. max_error_rate=5.",
                               returncode=REFUSED)  # fmt: skip
        settings[key.strip()] = int(number) if number.is_integer() else number
    return settings


def _print_upgrade(command, upgrade: Upgrade) -> None:
    console = command.console
    console.print(
        f"Upgrade #{upgrade.pk}: {upgrade.agent.name} {upgrade.from_version} → "
        f"{upgrade.to_version} ({upgrade.get_strategy_display().lower()}), "
        f"{upgrade.get_status_display().lower()}: {upgrade.phase}",
        markup=False,
    )
    if upgrade.not_before and upgrade.status == UpgradeStatus.SCHEDULED:
        console.print(f"  waits for its window: {upgrade.window_note}", markup=False)
    rows = [row for row in upgrade.measurements if row.get("old") or row.get("new")]
    if rows:
        table = Table(box=None, header_style="bold")
        for column in ("STEP", "SHARE", "TASKS", "OLD ERR", "OLD P95", "NEW ERR", "NEW P95",
                       "VERDICT"):  # fmt: skip
            table.add_column(column)
        for row in rows:
            old, new = row.get("old") or {}, row.get("new") or {}
            table.add_row(
                str(row.get("step")), _shown(row.get("share"), " %"), _shown(row.get("tasks")),
                _shown(old.get("error_rate"), " %"), _shown(old.get("p95_ms"), " ms"),
                _shown(new.get("error_rate"), " %"), _shown(new.get("p95_ms"), " ms"),
                str(row.get("verdict", "")),
            )  # fmt: skip
        console.print(table)
    if upgrade.outcome:
        console.print(f"  {upgrade.outcome}", markup=False)


def _shown(value, unit: str = "") -> str:
    return "-" if value is None or value == "" else f"{value}{unit}"


def _follow(command, upgrade: Upgrade) -> int:
    if upgrade.run is None:
        raise CommandError(
            f"Upgrade #{upgrade.pk} has no workflow run to follow.", returncode=REFUSED
        )
    status = follow_run(upgrade.run, command.console, goes_on="the upgrade goes on")
    upgrade = requests.sync(Upgrade.objects.select_related("agent").get(pk=upgrade.pk))
    _print_upgrade(command, upgrade)
    return 0 if upgrade.status == UpgradeStatus.SUCCEEDED else status or 1


def _upgrade(command, agents, target, strategy, steps, gate, replicas, config, allow_downgrade,
             restore_data, override_window, follow, json, **options) -> int:  # fmt: skip
    made = []
    for slug in agents:
        made.append(
            requests.request_upgrade(
                command.actor,
                services.get_agent(slug),
                target,
                strategy,
                steps=steps,
                gate_settings=_gates(gate),
                replicas=replicas,
                config=_json_arg(config, "--config"),
                allow_downgrade=allow_downgrade,
                restore_data=restore_data,
                override_window=override_window,
            )  # fmt: skip
        )
    if json:
        command.stdout.write(dumps({"upgrades": [upgrade_out(u) for u in made]}))
    else:
        for upgrade in made:
            _print_upgrade(command, upgrade)
    if follow:
        return max(_follow(command, upgrade) for upgrade in made)
    return 0


def _upgrades(command, agent, status, json, **options) -> int:
    upgrades = Upgrade.objects.select_related("agent")
    if agent:
        upgrades = upgrades.filter(agent=services.get_agent(agent))
    if status:
        upgrades = upgrades.filter(status=status)
    found = [requests.sync(u) for u in upgrades[:200]]
    if json:
        command.stdout.write(dumps({"upgrades": [upgrade_out(u) for u in found]}))
        return 0
    if not found:
        command.console.print("No upgrades; `manage.py servicing upgrade` starts one.")
        return 0
    table = Table(box=None, header_style="bold")
    for column in ("ID", "AGENT", "FROM", "TO", "STRATEGY", "STATUS", "SHARE", "PHASE"):
        table.add_column(column)
    for u in found:
        table.add_row(str(u.pk), u.agent.slug, u.from_version, u.to_version, u.strategy,
                      status_text(u.status), f"{u.weight} %", u.phase)  # fmt: skip
    command.console.print(table)
    return 0


def _upgrade_show(command, upgrade, json, **options) -> int:
    found = requests.get_upgrade(upgrade)
    if json:
        command.stdout.write(dumps(upgrade_out(found)))
    else:
        _print_upgrade(command, found)
    return 0


def _steer(action: str):
    def run(command, upgrade, reason, json, **options) -> int:
        changed = requests.command(command.actor, requests.get_upgrade(upgrade), action, reason)
        if json:
            command.stdout.write(dumps(upgrade_out(changed)))
        else:
            command.console.print(f"Upgrade #{changed.pk}: {action} asked; its steps act on it "
                                  "within a second.", markup=False)  # fmt: skip
        return 0

    return run


_promote, _pause, _resume, _abort = (_steer(a) for a in ("promote", "pause", "resume", "abort"))


def _rollback(command, agent, reason, restore_data, follow, json, **options) -> int:
    upgrade = requests.rollback_agent(
        command.actor, services.get_agent(agent), reason, restore_data=restore_data
    )
    if json:
        command.stdout.write(dumps(upgrade_out(upgrade)))
    else:
        _print_upgrade(command, upgrade)
    return _follow(command, upgrade) if follow else 0


def _scale(command, agent, replicas, json, **options) -> int:
    result = requests.scale(command.actor, services.get_agent(agent), replicas)
    if json:
        command.stdout.write(dumps(result))
    else:
        command.console.print(f"{result['agent']} runs {result['replicas']} replica(s) of "
                              f"{result['version']} ({result['seconds']} s).", markup=False)  # fmt: skip
    return 0


def _config(command, agent, patch, rollback, rollout, gate, json, **options) -> int:
    chosen = services.get_agent(agent)
    if rollout:
        if patch is None:
            raise CommandError("--rollout goes with --set JSON.", returncode=REFUSED)
        upgrade = requests.rollout_config(
            command.actor, chosen, _json_arg(patch, "--set"), gate_settings=_gates(gate)
        )
        if json:
            command.stdout.write(dumps(upgrade_out(upgrade)))
            return 0
        _print_upgrade(command, upgrade)
        return 0
    if rollback:
        applied = agent_services.roll_back_config(chosen, command.actor)
    else:
        applied = agent_services.patch_config(chosen, _json_arg(patch, "--set"), command.actor)
    replicas = applied.replicas
    if json:
        command.stdout.write(dumps({"agent": chosen.slug, "config": applied.agent.config,
                                    "replicas": replicas}))  # fmt: skip
        return 0
    reached = sum(1 for r in replicas if r.get("applied"))
    command.console.print(
        f"{chosen.name}'s config {'rolled back' if rollback else 'patched'}; applied to "
        f"{reached} of {len(replicas)} running replica(s) without a restart.",
        markup=False,
    )
    return 0
