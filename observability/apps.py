from django.apps import AppConfig


class ObservabilityConfig(AppConfig):
    name = "observability"
    verbose_name = "Observability"

    def ready(self) -> None:
        from agents import events as agent_events
        from observability import alerts, events, jobs, live, notify  # noqa: F401 - jobs: tasks
        from observability.metrics_views import GRAPH_TOPIC, register_agent_hooks
        from portal import realtime
        from portal.startup import STARTUP_STEPS

        live.register_topics()  # the log tails
        realtime.register_topic(GRAPH_TOPIC)  # the dependency graph's nodes

        agent_events.record_with(events.record_agent_event)  # the event log, in the same commit
        register_agent_hooks()  # card sparklines, the graph on agent pages
        notify.connect()  # alert toasts, live Alerts/Events, opening an agent sets the context
        if alerts.seed_step not in STARTUP_STEPS:
            STARTUP_STEPS.append(alerts.seed_step)
