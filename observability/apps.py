from django.apps import AppConfig


class ObservabilityConfig(AppConfig):
    name = "observability"
    verbose_name = "Observability"

    def ready(self) -> None:
        from agents import events as agent_events
        from observability import alerts, events, jobs  # noqa: F401 - jobs registers Celery tasks
        from portal.startup import STARTUP_STEPS

        agent_events.record_with(events.record_agent_event)
        if alerts.seed_step not in STARTUP_STEPS:
            STARTUP_STEPS.append(alerts.seed_step)
