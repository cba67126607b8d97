from django.apps import AppConfig


class ObservabilityConfig(AppConfig):
    name = "observability"
    verbose_name = "Observability"

    def ready(self) -> None:
        from agents import events as agent_events
        from observability import alerts, events, jobs, live, notify  # noqa: F401 - jobs: tasks
        from observability.metrics_views import GRAPH_TOPIC, register_agent_hooks
        from observability import api, metrics_views
        from portal import extensions, realtime
        from portal.startup import STARTUP_STEPS

        live.register_topics()  # the log tails
        realtime.register_topic(GRAPH_TOPIC)  # the dependency graph's nodes

        agent_events.record_with(events.record_agent_event)  # the event log, in the same commit
        register_agent_hooks()  # card sparklines, the graph on agent pages
        notify.connect()  # alert toasts, live Alerts/Events, opening an agent sets the context
        if alerts.seed_step not in STARTUP_STEPS:
            STARTUP_STEPS.append(alerts.seed_step)
        extensions.add_api_router(api.router)
        extensions.set_dashboard_focus(metrics_views.focus_for)
        extensions.add_dashboard_panel(
            extensions.DashboardPanel(
                "metrics",
                lambda request, agent: (
                    metrics_views.agent_dashboard(agent)
                    if agent is not None
                    else metrics_views.fleet_dashboard()
                ),
                in_focus_refresh=True,
                regions={
                    "fleet-health": (
                        "portal/dashboard.html#fleet-health",
                        metrics_views.fleet_metrics_now,
                    )
                },
            )
        )
