"""Admin for the help desk: customers and their contacts and agents, changed through
``helpdesk.customers`` (Admin, audited); interactions, tickets, webhook deliveries and diagnoses
shown read-only (the services and the sync write them). Playbooks have their own admin
(``helpdesk.playbooks``)."""

from __future__ import annotations

from django.contrib import admin

from helpdesk import customers
from helpdesk.models import (
    Contact,
    Customer,
    CustomerAgent,
    Diagnosis,
    Interaction,
    Ticket,
    WebhookDelivery,
)
from portal.actors import Actor


class ContactInline(admin.TabularInline):
    model = Contact
    extra = 0


class AgentInline(admin.TabularInline):
    model = CustomerAgent
    extra = 0
    raw_id_fields = ("agent",)


@admin.register(Customer)
class CustomerAdmin(admin.ModelAdmin):
    list_display = ("company_name", "key", "plan", "status", "trial_ends_at", "domain")
    list_filter = ("plan", "status")
    search_fields = ("company_name", "key", "domain", "email", "contacts__email", "contacts__name")
    inlines = [ContactInline, AgentInline]
    readonly_fields = ("created_at", "updated_at")

    def save_model(self, request, obj, form, change) -> None:
        customers.save_customer(Actor.from_request(request), obj, list(form.changed_data))

    def save_formset(self, request, form, formset, change) -> None:
        formset.save()
        changed = [
            str(item) for item in formset.new_objects + [o for o, _ in formset.changed_objects]
        ]
        changed += [f"deleted {item}" for item in formset.deleted_objects]
        if changed:
            customers.save_contacts(Actor.from_request(request), form.instance, changed)

    def delete_model(self, request, obj) -> None:
        customers.delete_customer(Actor.from_request(request), obj)

    def delete_queryset(self, request, queryset) -> None:
        actor = Actor.from_request(request)
        for customer in queryset:
            customers.delete_customer(actor, customer)


class ReadOnlyAdmin(admin.ModelAdmin):
    """Shown, never changed here: the services and the sync write these rows."""

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Interaction)
class InteractionAdmin(ReadOnlyAdmin):
    list_display = ("at", "customer", "agent_slug", "kind", "outcome", "latency_ms", "error")
    list_filter = ("outcome",)
    search_fields = ("agent_slug", "message_id", "customer__key")
    list_select_related = ("customer",)
    show_full_result_count = False


@admin.register(Ticket)
class TicketAdmin(ReadOnlyAdmin):
    list_display = ("number", "customer", "system", "subject", "status", "assignee", "sync_state")
    list_filter = ("system", "sync_state")
    search_fields = ("number", "subject", "customer__key")


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ReadOnlyAdmin):
    list_display = ("received_at", "system", "delivery_id", "result", "detail", "source")
    list_filter = ("system", "result")


@admin.register(Diagnosis)
class DiagnosisAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "customer", "symptom", "top_cause", "confidence", "verdict")
    list_filter = ("top_cause", "verdict")
    search_fields = ("symptom", "customer__key")
