"""``manage.py audit search|export|report|purge``: the audit log from the shell.

manage.py audit search --actor alice --action agent.stop --since 24h
manage.py audit export --format csv --object wow-cache --output stops.csv
manage.py audit report --since 2026-11-28 --until 2026-12-05 --format csv
manage.py audit purge            # what the daily retention job does, now
"""

from __future__ import annotations

import json
import sys

from django.core.management.base import BaseCommand, CommandError

from portal.audit import export, queries, report, retention
from portal.cli import REFUSED, add_common_options, command_actor, dumps, refusals_as_command_errors


def _filter_options(parser) -> None:
    parser.add_argument("--actor", help="A username, an email or a label (system:monitor).")
    parser.add_argument("--action", help="An action, e.g. agent.stop.")
    parser.add_argument("--object", dest="target", help="The object acted on, e.g. wow-cache.")
    parser.add_argument("--app", help="The action's namespace: agent, bulk, workflow, factory…")
    parser.add_argument("--door", help="page, api, admin, command or system.")
    parser.add_argument("--outcome", help="success, refused or failed.")
    parser.add_argument("--since", help="A date, a date and time, or a time ago (24h, 7d).")
    parser.add_argument("--until", help="The same; the end is not included.")
    parser.add_argument("-q", "--search", dest="q", help="Words anywhere in the entry.")


class Command(BaseCommand):
    help = "Search and export the audit log, write the compliance report, purge past retention."

    def add_arguments(self, parser) -> None:
        sub = parser.add_subparsers(dest="subcommand", required=True,
                                    metavar="{search,export,report,purge}")  # fmt: skip
        search = sub.add_parser("search", help="Entries, newest first.")
        _filter_options(search)
        search.add_argument("--limit", default="50", help="How many (1–500, default 50).")
        search.add_argument("--cursor", default="", help="Go on from a previous page's cursor.")
        add_common_options(search)
        exported = sub.add_parser("export", help="Every matching entry as CSV or JSON lines.")
        _filter_options(exported)
        exported.add_argument("--format", dest="fmt", choices=sorted(export.FORMATS), default="csv")
        exported.add_argument("--output", "-o", help="A file to write (default: standard out).")
        exported.add_argument("--as", dest="as_user", default=None, metavar="USERNAME")
        reported = sub.add_parser("report", help="The compliance report for a period.")
        reported.add_argument("--since", help="The start (default: 7 days ago).")
        reported.add_argument("--until", help="The end (default: now).")
        reported.add_argument("--format", dest="fmt", choices=["text", "json", "csv"],
                              default="text")  # fmt: skip
        reported.add_argument("--as", dest="as_user", default=None, metavar="USERNAME")
        sub.add_parser("purge", help="Delete the entries past AUDIT_RETENTION_DAYS now.")

    def handle(self, *args, subcommand: str, **options) -> None:
        with refusals_as_command_errors(REFUSED):
            getattr(self, f"_{subcommand}")(**options)

    def _params(self, options) -> dict[str, str]:
        names = ("actor", "action", "target", "app", "door", "outcome", "since", "until", "q")
        return {name: options.get(name) or "" for name in names}

    def _reader(self, name: str, options):
        from portal import roles

        actor = command_actor(name, options.get("as_user"))
        actor.require(roles.VIEW, "read the audit log")
        return actor

    def _search(self, **options) -> None:
        self._reader("audit search", options)
        wanted = queries.parse_filter(self._params(options))
        page = queries.search(wanted, cursor=options["cursor"],
                              limit=queries.parse_limit(options["limit"]))  # fmt: skip
        if options["json"]:
            entries = [queries.entry_dict(e) for e in page.entries]
            self.stdout.write(dumps({"entries": entries, "next_cursor": page.next_cursor}))
            return
        if not page.entries:
            self.stdout.write("No entries match.")
            return
        for e in page.entries:
            self.stdout.write(f"{e.at:%Y-%m-%d %H:%M:%S}  {e.outcome:<8} {e.door:<7} "
                              f"{e.actor}  {e.action}  {e.target}  {e.source}")  # fmt: skip
        if page.next_cursor:
            self.stderr.write(f"More: --cursor {page.next_cursor}")

    def _export(self, fmt: str, output: str | None, **options) -> None:
        self._reader("audit export", options)
        wanted = queries.parse_filter(self._params(options))
        try:
            out = open(output, "w", encoding="utf-8", newline="") if output else sys.stdout  # noqa: SIM115
        except OSError as error:
            raise CommandError(f"Cannot write {output}: {error.strerror}.") from None
        try:
            for piece in export.export_lines(wanted, fmt):
                out.write(piece)
        finally:
            if output:
                out.close()
        if output:
            self.stderr.write(f"Wrote {output}.")

    def _report(self, fmt: str, since: str | None, until: str | None, **options) -> None:
        actor = command_actor("audit report", options.get("as_user"))
        start, end = queries.parse_period({"since": since or "", "until": until or ""})
        found = report.compliance_report(actor, start, end)
        if fmt == "json":
            self.stdout.write(json.dumps(found, indent=2))
        elif fmt == "csv":
            self.stdout.write(report.report_csv(found), ending="")
        else:
            self._report_text(found)

    def _report_text(self, found: dict) -> None:
        totals = found["totals"]
        self.stdout.write(
            f"Compliance report {found['period']['since']} – {found['period']['until']}"
        )
        self.stdout.write(f"{totals['entries']} entries: {totals['success']} succeeded, "
                          f"{totals['refused']} refused, {totals['failed']} failed.")  # fmt: skip
        self.stdout.write("\nBy actor:")
        for row in found["by_actor"][:30]:
            self.stdout.write(f"  {row['entries']:>7}  {row['refused']:>5} refused  {row['actor']}")
        for key, title in (("refusals", "Refusals"), ("overrides", "Admin overrides"),
                           ("role_changes", "Role and access changes"),
                           ("token_changes", "API token changes")):  # fmt: skip
            self.stdout.write(f"\n{title}: {found[key]['count']}")
            for e in found[key]["entries"][:20]:
                self.stdout.write(f"  {e['at'][:19]}  {e['actor']}  {e['action']}  {e['target']}")
        self.stdout.write("\nAPI token use:")
        for row in found["token_use"][:30]:
            self.stdout.write(f"  {row['entries']:>7}  {row['actor']}  last {row['last'][:19]}")

    def _purge(self, **options) -> None:
        deleted = retention.purge_expired(command_actor("audit purge", None))
        self.stdout.write(f"Deleted {deleted} entries past retention.")
