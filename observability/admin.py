"""Admin for observability: alert rules (added, edited and disabled by Admins, audited), alerts
(read, acknowledged and resolved through the services), and the read-only event log, log lines
and metric samples, whose lists never count millions of rows; for queues, redrive jobs (read-only),
each queue's thresholds (saved through the queue services) and queue samples (read-only)."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db import transaction
from django.db.models import Count, Q
from django.utils.functional import cached_property

from agents.models import State
from observability import alerts, slo
from observability.models import (
    Alert,
    AlertRule,
    Event,
    LogEntry,
    MetricSample,
    ServiceLevelObjective,
)
from observability.queues import services as queue_services
from observability.queues.catalog import QueueNotFound
from observability.queues.figures import Thresholds
from observability.queues.models import QueueSample, QueueThreshold, RedriveJob
from portal.actors import Actor
from portal.admin_site import ReadOnlyModelAdmin
from portal.refusals import Refused
from portal.services import record_audit

# Metrics that are a share of something, so a threshold above 100 could never be crossed.
PERCENT_METRICS = {AlertRule.Metric.ERROR_RATE, AlertRule.Metric.MEMORY_PERCENT}
# A state rule watches the agents alert evaluation looks at: not DRAFT, not REVOKED.
RULE_STATES = [state for state in State.values if state in alerts.WATCHED_STATES]


class CappedCountPaginator(Paginator):
    """Counts at most ``cap`` rows (``SELECT count(*) FROM (... LIMIT cap)``), so a list over
    millions of rows costs one short query; rows past the cap are reached by narrowing the
    filters."""

    cap = 10_000

    @cached_property
    def count(self) -> int:
        return self.object_list[: self.cap].count()


class BigTableAdmin(ReadOnlyModelAdmin):
    """Read-only lists of tables that grow without bound (log lines, events, samples)."""

    paginator = CappedCountPaginator
    show_full_result_count = False
    list_per_page = 100


# --- alert rules ------------------------------------------------------------------------------


class AlertRuleForm(forms.ModelForm):
    """Checks that the rule's kind has what it needs, and nothing it would ignore."""

    state = forms.ChoiceField(
        choices=[("", "---------")] + [(state, state) for state in RULE_STATES],
        required=False,
        help_text="For agent-state rules: fire while an agent is in this state.",
    )

    class Meta:
        model = AlertRule
        fields = (
            "name", "description", "kind", "metric", "operator", "threshold", "state",
            "for_seconds", "severity", "agent", "enabled",
        )  # fmt: skip

    def clean(self):
        data = super().clean()
        kind = data.get("kind")
        metric, threshold, state = data.get("metric"), data.get("threshold"), data.get("state")
        if kind == AlertRule.Kind.METRIC:
            if not metric:
                self.add_error("metric", "A metric threshold rule needs a metric: choose one.")
            if not data.get("operator"):
                self.add_error("operator", "Choose whether the rule fires above or below.")
            if threshold is None:
                self.add_error("threshold", "A metric threshold rule needs a threshold.")
            elif threshold < 0:
                self.add_error(
                    "threshold", "No metric goes below 0: give a threshold of 0 or more."
                )
            elif metric in PERCENT_METRICS and threshold > 100:
                self.add_error(
                    "threshold",
                    f"{AlertRule.Metric(metric).label} is a percentage: give a threshold from 0 "
                    "to 100.",
                )
        else:
            what = {
                AlertRule.Kind.STATE: "an agent-state",
                AlertRule.Kind.HEARTBEAT: "a no-heartbeat",
                AlertRule.Kind.SLO: "an SLO burn-rate",
            }.get(kind, "a workflow-deadline")
            if metric:
                self.add_error(
                    "metric", f"Only metric rules have a metric: clear it for {what} rule."
                )
            if threshold is not None:
                self.add_error(
                    "threshold", f"Only metric rules have a threshold: clear it for {what} rule."
                )
        if kind == AlertRule.Kind.STATE and not state and "state" not in self.errors:
            self.add_error("state", "An agent-state rule needs the state it fires on: choose one.")
        if kind != AlertRule.Kind.STATE and state:
            self.add_error("state", "Only agent-state rules have a state: clear it.")
        if kind != AlertRule.Kind.METRIC:
            data["operator"] = AlertRule.Operator.ABOVE  # not used; keep the default
        return data


def _set_enabled(enabled: bool):
    def admin_action(modeladmin, request, queryset):
        actor = Actor.from_request(request)
        changed = 0
        with transaction.atomic():
            chosen = list(queryset.values_list("pk", flat=True))
            rules = AlertRule.objects.select_for_update().filter(pk__in=chosen)
            for rule in rules.filter(enabled=not enabled):
                rule.enabled = enabled
                rule.save(update_fields=["enabled", "updated_at"])
                record_audit(actor, f"alert_rule.{'enable' if enabled else 'disable'}",
                             target=rule.name, rule=rule.pk)  # fmt: skip
                changed += 1
        verb = "enabled" if enabled else "disabled"
        modeladmin.message_user(request, f"{changed} rule(s) {verb}.")

    admin_action.__name__ = "enable_rules" if enabled else "disable_rules"
    admin_action.short_description = f"{'Enable' if enabled else 'Disable'} selected rules"
    return admin_action


@admin.register(AlertRule)
class AlertRuleAdmin(admin.ModelAdmin):
    form = AlertRuleForm
    list_display = ("name", "condition_text", "severity", "scope", "enabled", "open_alerts")
    list_filter = ("enabled", "kind", "severity")
    search_fields = ("name", "description")
    list_select_related = ("agent",)
    readonly_fields = ("created_at", "updated_at")
    actions = [_set_enabled(False), _set_enabled(True)]

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .annotate(open_count=Count("alerts", filter=Q(alerts__status__in=Alert.OPEN)))
        )

    @admin.display(description="Condition")
    def condition_text(self, rule: AlertRule) -> str:
        return rule.condition

    @admin.display(description="Agents")
    def scope(self, rule: AlertRule) -> str:
        return rule.agent.name if rule.agent_id else "All agents"

    @admin.display(description="Open alerts", ordering="open_count")
    def open_alerts(self, rule: AlertRule) -> int:
        return rule.open_count

    def has_delete_permission(self, request, obj=None) -> bool:
        # Disable instead: deleting a rule would delete the history of the alerts it fired.
        return False

    def save_model(self, request, obj, form, change) -> None:
        super().save_model(request, obj, form, change)
        record_audit(
            Actor.from_request(request), f"alert_rule.{'change' if change else 'create'}",
            target=obj.name, rule=obj.pk, changed=list(form.changed_data),
        )  # fmt: skip


# --- alerts -----------------------------------------------------------------------------------


def _alert_action(service, label: str, done: str, note: str):
    def admin_action(modeladmin, request, queryset):
        actor = Actor.from_request(request)
        succeeded, refused = 0, []
        for alert in queryset:
            try:
                service(alert, actor, note)
                succeeded += 1
            except PermissionDenied as denied:
                modeladmin.message_user(request, str(denied), messages.ERROR)
                return
            except alerts.AlertActionError as exc:
                refused.append(exc.message)
        if succeeded:
            modeladmin.message_user(request, f"{succeeded} alert(s) {done}.")
        for message in refused:
            modeladmin.message_user(request, message, messages.WARNING)

    admin_action.__name__ = f"{service.__name__}_alerts"
    admin_action.short_description = f"{label} selected alerts"
    return admin_action


@admin.register(Alert)
class AlertAdmin(ReadOnlyModelAdmin):
    """Alerts fire and clear by themselves; people acknowledge and resolve them (audited)."""

    list_display = ("id", "fired_at", "severity", "status", "agent", "summary", "rule",
                    "acknowledged_by", "resolved_by")  # fmt: skip
    list_filter = ("status", "severity", "agent", "rule")
    list_select_related = ("agent", "rule")
    search_fields = ("summary",)
    date_hierarchy = "fired_at"
    actions = [
        _alert_action(alerts.acknowledge, "Acknowledge", "acknowledged", "In the admin."),
        _alert_action(alerts.resolve, "Resolve", "resolved", "Resolved in the admin."),
    ]


# --- the event log, log lines and metric samples ---------------------------------------------


@admin.register(Event)
class EventAdmin(BigTableAdmin):
    list_display = ("ts", "severity", "kind", "agent", "summary", "actor")
    list_filter = ("kind", "severity", "agent")
    list_select_related = ("agent",)
    search_fields = ("summary",)
    ordering = ("-ts", "-id")


@admin.register(LogEntry)
class LogEntryAdmin(BigTableAdmin):
    list_display = ("ts", "agent", "replica", "level", "event", "message")
    list_filter = ("level", "agent")
    list_select_related = ("agent",)
    # Case-sensitive "contains" is what the trigram index on message answers.
    search_fields = ("message__contains",)
    ordering = ("-ts", "-id")


@admin.register(MetricSample)
class MetricSampleAdmin(BigTableAdmin):
    list_display = ("ts", "agent", "step", "up", "cpu_percent", "memory_bytes", "throughput",
                    "error_rate", "latency_p95_ms", "queue_depth", "dead_letters")  # fmt: skip
    list_filter = ("step", "agent")
    list_select_related = ("agent",)
    ordering = ("-ts", "-id")


# --- queues: redrive jobs, thresholds, samples --------------------------------------------------


@admin.register(RedriveJob)
class RedriveJobAdmin(ReadOnlyModelAdmin):
    """Redrive and delete jobs, read-only: they are started, followed and cancelled on the queue
    pages, the API and ``manage.py queues``, which check the role and audit."""

    list_display = ("id", "queue_name", "action", "scope", "status", "progress", "actor",
                    "created_at")  # fmt: skip
    list_filter = ("status", "action", "scope")
    search_fields = ("queue_name", "actor")
    date_hierarchy = "created_at"
    ordering = ("-id",)

    @admin.display(description="Done / total")
    def progress(self, job: RedriveJob) -> str:
        return f"{job.done:,} / {job.total:,}"


class QueueThresholdForm(forms.ModelForm):
    """The thresholds are saved by ``services.set_thresholds``, which checks them (numbers from 0
    to 10^9, degraded not above critical, a queue that exists) and audits the change. The admin
    calls ``is_valid()`` once, before it saves, so the service is asked there: its refusal
    becomes the form's error and nothing is written; what it saved is what the admin shows."""

    class Meta:
        model = QueueThreshold
        fields = ("queue_name", *Thresholds.FIELDS)

    actor: Actor | None = None  # set by QueueThresholdAdmin.get_form
    saved: QueueThreshold | None = None

    def clean(self):
        data = super().clean()
        if self.instance.pk is None and all(data.get(f) is None for f in Thresholds.FIELDS):
            raise forms.ValidationError(
                "Give at least one threshold: a queue without any takes the defaults already."
            )
        return data

    def is_valid(self) -> bool:
        if not super().is_valid():
            return False
        if getattr(self, "_applied", False):
            return True
        self._applied = True
        name = self.instance.queue_name if self.instance.pk else self.cleaned_data["queue_name"]
        values = {field: self.cleaned_data.get(field) for field in Thresholds.FIELDS}
        try:
            self.saved = queue_services.set_thresholds(self.actor, name, values)
        except (Refused, PermissionDenied) as refused:
            self.add_error(None, str(refused))
            return False
        return True


@admin.register(QueueThreshold)
class QueueThresholdAdmin(admin.ModelAdmin):
    """A queue's own health thresholds (an empty field takes the default; emptying them all
    removes the override). Saved and removed through the queue services: validated, audited."""

    form = QueueThresholdForm
    list_display = ("queue_name", *Thresholds.FIELDS, "updated_by", "updated_at")
    search_fields = ("queue_name",)
    readonly_fields = ("updated_by", "updated_at")

    def get_readonly_fields(self, request, obj=None):
        # The queue a row belongs to stays its queue; another queue gets a row of its own.
        return (*self.readonly_fields, "queue_name") if obj is not None else self.readonly_fields

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change, **kwargs)
        return type(form.__name__, (form,), {"actor": Actor.from_request(request)})

    def save_model(self, request, obj, form, change) -> None:
        # The service has saved it (form.is_valid); the admin's own save would skip the audit.
        saved = form.saved
        if saved is None:
            messages.info(request, f"{obj.queue_name} takes the default thresholds again.")
            return
        obj.pk, obj.updated_at, obj.updated_by = saved.pk, saved.updated_at, saved.updated_by

    def delete_model(self, request, obj) -> None:
        self._remove(request, [obj])

    def delete_queryset(self, request, queryset) -> None:
        self._remove(request, list(queryset))

    def _remove(self, request, rows: list[QueueThreshold]) -> None:
        actor = Actor.from_request(request)
        for row in rows:
            try:
                queue_services.set_thresholds(
                    actor, row.queue_name, dict.fromkeys(Thresholds.FIELDS)
                )
            except QueueNotFound:
                # The queue is gone (its agent revoked): only the row is left to remove.
                row.delete()
                record_audit(actor, "queues.thresholds", target=row.queue_name, removed=True)


@admin.register(QueueSample)
class QueueSampleAdmin(BigTableAdmin):
    list_display = ("ts", "queue_name", "step", "pending", "in_flight", "in_rate", "out_rate",
                    "lag_seconds", "error_rate", "dead_letters", "dlq_inflow")  # fmt: skip
    list_filter = ("step",)
    search_fields = ("queue_name",)
    ordering = ("-ts", "-id")


class ObjectiveForm(forms.ModelForm):
    """Validated and saved by ``slo.set_objective`` (an Admin's, audited), as every door does."""

    actor: Actor

    class Meta:
        model = ServiceLevelObjective
        fields = ("agent", "objective")

    def clean(self):
        cleaned = super().clean()
        agent, objective = cleaned.get("agent"), cleaned.get("objective")
        if agent is not None and objective is not None and not self.errors:
            try:
                self.saved = slo.set_objective(agent, objective, self.actor)
            except (Refused, PermissionDenied) as refused:
                self.add_error("objective", str(refused))
        return cleaned


@admin.register(ServiceLevelObjective)
class ServiceLevelObjectiveAdmin(admin.ModelAdmin):
    form = ObjectiveForm
    list_display = ("agent", "objective", "updated_at")

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change, **kwargs)
        return type(form.__name__, (form,), {"actor": Actor.from_request(request)})

    def save_model(self, request, obj, form, change) -> None:
        obj.pk, obj.updated_at = form.saved.pk, form.saved.updated_at  # saved by the service

    def delete_model(self, request, obj) -> None:
        slo.set_objective(obj.agent, None, Actor.from_request(request))

    def delete_queryset(self, request, queryset) -> None:
        for row in list(queryset.select_related("agent")):
            self.delete_model(request, row)
