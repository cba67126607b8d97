from django.apps import AppConfig


class ObservabilityConfig(AppConfig):
    name = "observability"
    verbose_name = "Observability"

    def ready(self) -> None:
        # Imported here, not at the top: models and other apps are ready only now.
        from agents import events as agent_events
        from observability import (
            alerts,
            api,
            context,
            dashboard,
            events,
            graph,
            jobs,  # noqa: F401 - registers the Celery tasks
            live,
            logs,
            notify,
            sparklines,
        )
        from observability.queues import api as queue_api
        from observability.queues import live as queue_live
        from observability.queues import redrive
        from observability.views import logs as log_views
        from observability.views import queues as queue_views
        from portal import extensions, realtime, work
        from portal.startup import STARTUP_STEPS

        live.register_topics()  # the log tails
        queue_live.register_topics()  # the queue pages
        extensions.add_link("dead_letters", queue_views.dead_letters_link)  # errors link there
        # A workflow step's agent task: the lines its agent wrote about it, and a link to them.
        extensions.add_lookup("agent_log_lines", logs.lines_about)
        extensions.add_link("agent_logs", log_views.logs_link)
        work.register_sweeper("redrive jobs", redrive.sweep)  # redrives whose worker died
        realtime.register_topic(graph.GRAPH_TOPIC)  # the dependency graph's nodes

        agent_events.record_with(events.record_agent_event)  # the event log, in the same commit
        agent_events.subscribe(graph.on_agent_event)  # the graph's nodes follow their agents
        extensions.add_card_extras(sparklines.card_sparklines)  # every agent card's CPU
        extensions.add_detail_panel(graph.graph_detail_panel)  # the graph on agent pages
        from observability.views.slo import slo_panel

        extensions.add_detail_panel(slo_panel)  # its availability objective and error budget
        notify.connect()  # alert toasts, live Alerts/Events, opening an agent sets the context
        if alerts.seed_step not in STARTUP_STEPS:
            STARTUP_STEPS.append(alerts.seed_step)
        extensions.add_api_router(api.router)
        from observability import prometheus

        extensions.add_metrics_collector(prometheus.collect)  # /-/metrics: alerts, collector lag
        extensions.add_api_router(queue_api.router)  # /queues
        from observability import slo_api

        extensions.add_api_router(slo_api.router, first=True)  # before /agents/{slug}/{action}
        extensions.set_dashboard_focus(context.focus_for)
        extensions.add_dashboard_panel(dashboard.PANEL)
