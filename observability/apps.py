from django.apps import AppConfig


class ObservabilityConfig(AppConfig):
    name = "observability"
    verbose_name = "Observability"

    def ready(self) -> None:
        from agents import events as agent_events
        from observability import events, jobs  # noqa: F401 - jobs registers its Celery tasks

        agent_events.record_with(events.record_agent_event)
