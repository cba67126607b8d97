"""``manage.py factory``: new agents from templates, for on-call engineers and scripts.

factory templates [--json]
factory validate --template KEY [--name NAME] [--set FIELD=VALUE ...] [--json]
factory sandbox --template KEY [--set FIELD=VALUE ...] [--json]
factory create --template KEY --name NAME [--set FIELD=VALUE ...] [--dry-run] [--keep-on-failure]
               [--follow] [--json]
each acting as ``--as USERNAME`` (with that user's role) or, by default, as the shell's Admin.

``--set`` takes a new agent's fields: slug, description, tier, owner, capabilities,
specializations, dependencies, environment and secrets (``NAME=value;NAME=value``),
tasks_per_month, ``settings.<key>`` (one of the template's settings) and ``resources.<key>``
(cpu_millicores, memory_mb, storage_mb, replicas). A value that parses as JSON is taken as JSON
(``--set dependencies='["wow-cache"]'``, ``--set settings.max_keys=500``), anything else as text;
the text fields (name, slug, description, tier, owner) always as text.

Every door calls the same ``factory.services``; ``--json`` prints what the API answers
(``factory.schemas``). ``sandbox`` runs the tests here, in this process, against a real agent
torn down afterwards. ``create --follow`` watches the creation's workflow run with the shared job
watcher, printing each step as it changes. Exit status: 0 done (the configuration checks out, the
tests passed, the followed creation succeeded), 1 a sandbox test failed or the followed creation
did not succeed, 2 refused or bad input (a configuration with errors, an unknown template).
"""

from __future__ import annotations

import json as jsonlib
from functools import partial
from typing import Any, NoReturn, TextIO, cast

from django.core.management.base import BaseCommand, CommandError
from rich.console import Console
from rich.table import Table
from rich.text import Text

from agents.management.workflow_cli import follow_run, run_failed
from agents.management.workflow_cli import status_text as _status
from agents.workflows.models import WorkflowRun
from agents.workflows.schemas import run_detail_out
from factory.models import Draft, SandboxRun, Template
from factory.schemas import (
    FactoryTemplates,
    FactoryValidation,
    creation_accepted,
    field_errors,
    sandbox_out,
    template_out,
)
from factory.services import creation, sandbox, templates
from factory.services.refusals import FactoryRefused
from portal.cli import (
    InlineJob,
    JobProgress,
    add_common_options,
    command_actor,
    dumps,
    refusals_as_command_errors,
    watch_job,
)

REFUSED = 2
POLL_SECONDS = 0.3
LOG_LINES = 10
TEXT_FIELDS = {"name", "slug", "description", "tier", "owner"}
PAIR_FIELDS = {"environment", "secrets"}


class Command(BaseCommand):
    help = (
        "New agents from templates: list the templates, check a configuration, run it in a "
        "sandbox, create it (a workflow; --dry-run shows what would be made and its cost). Exit "
        "status 1 when a sandbox test fails or a followed creation does not succeed, 2 when "
        "refused or for bad input."
    )

    def add_arguments(self, parser) -> None:
        sub = parser.add_subparsers(dest="command", required=True)
        listing = sub.add_parser("templates", help="The templates, with their monthly cost.")
        listing.add_argument("--json", action="store_true", help="JSON, as the API answers.")
        check = sub.add_parser("validate", help="Check a configuration; print each error.")
        _config_options(check)
        trial = sub.add_parser("sandbox", help="Run the template's tests against a configuration.")
        _config_options(trial, name=False)
        create = sub.add_parser("create", help="Create an agent (a workflow run).")
        _config_options(create)
        create.add_argument("--dry-run", action="store_true",
                            help="Print what would be made and its cost; make nothing.")  # fmt: skip
        create.add_argument("--keep-on-failure", action="store_true",
                            help="Keep what was made when a step fails for good, for debugging.")  # fmt: skip
        create.add_argument("--follow", action="store_true", help="Watch the creation to its end.")

    def handle(self, *args, command: str, **options) -> None:
        out, err = cast("TextIO", self.stdout._out), cast("TextIO", self.stderr._out)
        width = None if out.isatty() else 200  # piped: wide lines, not 80-column wrapping
        self.console = Console(file=out, highlight=False, soft_wrap=True, width=width)
        self.err = Console(file=err, highlight=False, soft_wrap=True)
        self.actor = command_actor(f"factory {command}", options.pop("as_user", None))
        with refusals_as_command_errors(REFUSED):
            getattr(self, f"_{command}")(**options)

    # --- templates -------------------------------------------------------------------------------

    def _templates(self, json: bool, **options) -> None:
        rows = [template_out(t) for t in templates.current_templates()]
        if json:
            self.stdout.write(dumps(FactoryTemplates(templates=rows)))
            return
        table = Table(box=None, header_style="bold")
        for column in ("TEMPLATE", "VERSION", "NAME", "CATEGORY", "COMPLEXITY", "TESTS",
                       "MONTHLY COST"):  # fmt: skip
            table.add_column(column)
        for row in rows:
            cost = row.monthly_cost
            table.add_row(
                row.template_id, str(row.version), row.name, row.category, row.complexity,
                str(len(row.test_tasks)), f"{cost.monthly_total} {cost.currency}",
            )  # fmt: skip
        self.console.print(table)

    # --- validate --------------------------------------------------------------------------------

    def _validate(self, template: str, name: str | None, sets: list[str], json: bool,
                  **options) -> None:  # fmt: skip
        chosen, config = self._template(template), _config(sets)
        try:
            plan = creation.preview(chosen, name, config)
        except FactoryRefused as refused:
            self._invalid(refused, json=json)
        if json:
            self.stdout.write(dumps(FactoryValidation(valid=True, errors=[])))
            return
        cost = plan["cost"]
        self.console.print(
            f"The configuration checks out: {plan['values']['name']} ({plan['values']['slug']}), "
            f"{cost['monthly_total']} {cost['currency']} a month.",
            markup=False,
        )

    def _invalid(self, refused: FactoryRefused, *, json: bool) -> NoReturn:
        """Print a configuration's errors, one ``field: message`` a line, and end with status 2
        (a refusal that is not about fields ends with its sentence)."""
        if refused.code != "invalid" or not refused.errors:
            raise CommandError(refused.message, returncode=REFUSED) from None
        if json:
            self.stdout.write(
                dumps(FactoryValidation(valid=False, errors=field_errors(refused.errors)))
            )
        else:
            for error in refused.errors:
                self.console.print(f"{error['field']}: {error['message']}", markup=False)
        count = len(refused.errors)
        raise CommandError(
            f"The configuration does not check out: {count} error{'s' if count > 1 else ''}.",
            returncode=REFUSED,
        ) from None

    # --- sandbox ---------------------------------------------------------------------------------

    def _sandbox(self, template: str, sets: list[str], json: bool, **options) -> None:
        chosen, config = self._template(template), _config(sets)
        try:
            run = creation.sandbox_config(self.actor, chosen, config)
        except FactoryRefused as refused:
            self._invalid(refused, json=json)
        self._run_sandbox(run)
        run.refresh_from_db()
        if json:
            self.stdout.write(dumps(sandbox_out(run)))
        else:
            self._print_sandbox(run)
        if run.status != SandboxRun.Status.PASSED:
            raise CommandError(f"Sandbox #{run.pk} {run.status}: {run.error}", returncode=1)

    def _run_sandbox(self, run: SandboxRun) -> None:
        """Run the sandbox here while a progress bar shows its tests (a worker that took it
        first carries it out instead, and the bar follows that)."""
        runner = InlineJob(f"sandbox-{run.pk}", partial(sandbox.run_sandbox, run.pk))
        runner.start()
        total = len(run.template.test_tasks)

        def poll() -> JobProgress:
            run.refresh_from_db()
            return JobProgress(
                status=run.status,
                finished=run.finished or runner.error is not None,
                succeeded=run.status == SandboxRun.Status.PASSED,
                done=len(run.results),
                total=total or None,
                counts=f"✓ {run.passed_count} ✗ {len(run.results) - run.passed_count}",
            )

        try:
            watch_job(poll, console=self.err, label=f"Sandbox #{run.pk} ({run.template.name})",
                      poll_seconds=POLL_SECONDS)  # fmt: skip
        except KeyboardInterrupt:
            raise CommandError(
                f"Stopped watching sandbox #{run.pk}; it is torn down when it ends (or by the "
                "sweep)."
            ) from None
        error = runner.finish()
        if error is not None:
            raise CommandError(f"Sandbox #{run.pk} broke: {error!r}", returncode=1)

    def _print_sandbox(self, run: SandboxRun) -> None:
        say = self.console.print
        for result in run.results:
            mark = Text("✓ pass", "green") if result["passed"] else Text("✗ fail", "red")
            latency = result.get("latency_ms")
            line = Text.assemble(mark, f"  {result['name']}",
                                 f"  {latency:.1f} ms" if latency is not None else "")  # fmt: skip
            if not result["passed"]:
                line.append(f"  {result.get('error') or ''}", style="red")
            say(line)
        figures = [
            f"p50 {run.latency_p50_ms} ms" if run.latency_p50_ms is not None else "",
            f"p95 {run.latency_p95_ms} ms" if run.latency_p95_ms is not None else "",
            f"peak memory {run.peak_memory_mb} MiB" if run.peak_memory_mb else "",
        ]
        say(Text.assemble((f"Sandbox #{run.pk} ", "bold"), _status(run.status),
                          f": {run.passed_count} of {len(run.results)} test(s) passed",
                          f"; {', '.join(f for f in figures if f)}" if any(figures) else "", "."))  # fmt: skip
        if run.logs:
            say(Text(f"The agent's last {min(LOG_LINES, len(run.logs))} log lines:", "bold"))
            for entry in run.logs[-LOG_LINES:]:
                say(f"  {entry['ts']} {_log_text(entry['text'])}", markup=False)

    # --- create ----------------------------------------------------------------------------------

    def _create(self, template: str, name: str | None, sets: list[str], dry_run: bool,
                keep_on_failure: bool, follow: bool, json: bool, **options) -> None:  # fmt: skip
        chosen, config = self._template(template), _config(sets)
        if dry_run:
            self._preview(chosen, name, config, json=json)
            return
        try:
            draft = creation.create_from_config(
                self.actor, chosen, name, config, keep_on_failure=keep_on_failure
            )
        except FactoryRefused as refused:
            self._invalid(refused, json=json)
        run = draft.run
        assert run is not None  # a draft being created has its run
        if json and not follow:
            self.stdout.write(dumps(creation_accepted(draft)))
            return
        if not json:
            self.console.print(
                f"Creating {draft.values['name']} ({draft.agent_slug}) as workflow run #{run.pk}: "
                f"/workflows/{run.pk}/ (`manage.py workflows show {run.pk}`).",
                markup=False,
            )
        if follow:
            self._follow(draft, run, json=json)

    def _preview(self, template: Template, name: str | None, config: dict, *, json: bool) -> None:
        try:
            plan = creation.preview(template, name, config)
        except FactoryRefused as refused:
            self._invalid(refused, json=json)
        if json:
            self.stdout.write(dumps(plan))
            return
        say = self.console.print
        values = plan["values"]
        say(f"Creating {values['name']} ({values['slug']}) from {template.label} would make "
            "(nothing was made):", markup=False)  # fmt: skip
        table = Table(box=None, header_style="bold")
        table.add_column("WHAT")
        table.add_column("NAME")
        for thing in plan["objects"]:
            table.add_row(thing["kind"], thing["name"])
        say(table)
        cost = plan["cost"]
        say(Text(f"Monthly cost: {cost['monthly_total']} {cost['currency']}", "bold"),
            Text(f"(budget {cost['budget']}{'' if cost['within_budget'] else ', over budget'})"))  # fmt: skip
        for line in cost["breakdown"]:
            say(f"  {line['item']}: {line['monthly']} ({line['basis']})", markup=False)

    def _follow(self, draft: Draft, run: WorkflowRun, *, json: bool) -> None:
        """Watch the creation's run until it ends, printing each step as its status changes; exit
        1 unless it succeeded."""
        exit_status = follow_run(run, self.err, goes_on="the creation goes on")
        draft = creation.sync(draft)
        if json:
            self.stdout.write(dumps(run_detail_out(run)))
        elif not exit_status:
            self.console.print(
                f"Created {draft.values['name']} ({draft.agent_slug}): run #{run.pk} succeeded.",
                markup=False,
            )
        if exit_status:
            raise run_failed(run, f"Creating {draft.agent_slug}: run #{run.pk}")

    # --- shared -----------------------------------------------------------------------------------

    def _template(self, key: str) -> Template:
        return templates.template_by_id(key)  # an unknown one: refused, with the list


def _config_options(parser, *, name: bool = True) -> None:
    parser.add_argument("--template", required=True, metavar="KEY",
                        help="The template; `factory templates` lists them.")  # fmt: skip
    if name:
        parser.add_argument(
            "--name", default=None, help="The new agent's name, e.g. 'Acme Memory'."
        )
    parser.add_argument(
        "--set", dest="sets", action="append", default=[], metavar="FIELD=VALUE",
        help="A field of the configuration (repeat for more): slug=acme-memory, owner=Acme, "
        "settings.max_keys=500, resources.replicas=2, secrets='API_KEY=x;OTHER=y'.",
    )  # fmt: skip
    add_common_options(parser)


def _config(sets: list[str]) -> dict[str, Any]:
    """The configuration ``--set`` gives: ``resources.<key>`` gathered into ``resources``,
    ``NAME=value;...`` pairs as lines, JSON where a value parses as JSON."""
    config: dict[str, Any] = {}
    for pair in sets:
        field, equals, text = pair.partition("=")
        field = field.strip()
        if not equals or not field:
            raise CommandError(
                f"{pair[:60]!r}: write a field as FIELD=VALUE, e.g. --set owner=Acme.",
                returncode=REFUSED,
            )
        value = text if field in TEXT_FIELDS else _json_or_text(text)
        if field in PAIR_FIELDS and isinstance(value, str):
            value = value.replace(";", "\n")
        if field.startswith("resources."):
            config.setdefault("resources", {})[field.partition(".")[2]] = value
        else:
            config[field] = value
    return config


def _json_or_text(text: str) -> Any:
    try:
        return jsonlib.loads(text)
    except ValueError:
        return text


def _log_text(text: str) -> str:
    """agentd writes JSON lines: their level and message read better than the whole line."""
    try:
        line = jsonlib.loads(text)
    except ValueError:
        return text
    if not isinstance(line, dict) or "message" not in line:
        return text
    return f"{line.get('level', '')} {line.get('event', '')}: {line['message']}".strip()
