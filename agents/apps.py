from __future__ import annotations

import importlib

from django.apps import AppConfig
from django.conf import settings


class AgentsConfig(AppConfig):
    name = "agents"
    verbose_name = "Agents"

    def ready(self) -> None:
        # Imported here, once every app's models are loaded (Django's rule for ready()).
        from agents import api, bulk, errors, events, live, services
        from agents.views import errors as error_views
        from agents.views import shared as views
        from agents.workflows import builtin as workflow_definitions
        from agents.workflows import live as workflow_live
        from agents.workflows import steps as workflow_steps
        from agents.workflows import sweep as workflow_sweep
        from portal import extensions, work
        from portal.management.commands import up
        from portal.startup import STARTUP_STEPS

        if services.seed_step not in STARTUP_STEPS:
            STARTUP_STEPS.append(services.seed_step)
        live.register_topics()
        workflow_live.register_topics()
        events.subscribe(live.on_agent_event)
        events.subscribe_bulk(live.on_bulk_event)
        from agents import prometheus

        extensions.add_metrics_collector(prometheus.collect)  # /-/metrics: the fleet's figures
        if up.monitor_child not in up.EXTRA_CHILDREN:
            up.EXTRA_CHILDREN.append(up.monitor_child)
        # Accepted work whose runner died is handed out again (beat, and a worker starting).
        work.register_sweeper("operations", services.resume_stalled_operations)
        work.register_sweeper("recoveries", errors.resume_stalled_recoveries)
        work.register_sweeper("bulk operations", bulk.resume_stalled_bulk_operations)
        work.register_sweeper("workflow steps", workflow_sweep.resume_stalled_steps)
        # The engine's own step kinds, then the definitions the portal ships with.
        workflow_steps.register_all()
        workflow_definitions.register_all()
        for module in settings.WORKFLOW_DEFINITION_MODULES:
            importlib.import_module(module)  # it registers what it declares
        extensions.add_api_router(api.router)
        # Probes: GET/PUT /agents/{slug}/probes comes before POST /agents/{slug}/{action}.
        from agents.probes import api as probes_api
        from agents.probes.views import probes_detail_panel

        extensions.add_api_router(probes_api.router, first=True)
        extensions.add_detail_panel(probes_detail_panel)
        extensions.add_dashboard_panel(
            extensions.DashboardPanel(
                "fleet", lambda request, agent: views.fleet_overview(request, only=agent)
            )
        )
        extensions.add_dashboard_panel(
            extensions.DashboardPanel(
                "errors",
                lambda request, agent: error_views.dashboard_errors() if agent is None else {},
            )
        )
