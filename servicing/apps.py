from django.apps import AppConfig


class ServicingConfig(AppConfig):
    name = "servicing"
    verbose_name = "Servicing"

    def ready(self) -> None:
        # Imported here, not at the top: models and the other apps are ready only now.
        from portal import extensions
        from portal.startup import STARTUP_STEPS
        from servicing import api, services, windows_api
        from servicing.upgrades import api as upgrade_api
        from servicing.upgrades import workflow

        if services.seed_step not in STARTUP_STEPS:
            STARTUP_STEPS.append(services.seed_step)  # the first release, 1.0.0
        workflow.register_all()  # the upgrade's step kinds and its workflow
        extensions.add_api_router(api.router)  # /api/platform/servicing
        # /api/platform/agents/{slug}/versions: ahead of the agents router, whose
        # POST /agents/{slug}/{action} would otherwise take the path (and answer GET with 405).
        extensions.add_api_router(api.agent_router, first=True)
        extensions.add_api_router(upgrade_api.router)  # /api/platform/servicing/upgrades
        extensions.add_api_router(upgrade_api.agent_router, first=True)  # .../upgrade, rollback
        extensions.add_api_router(windows_api.router)  # /api/platform/servicing/windows
        # ``agents build-image`` publishes the image it built as a release through this lookup
        # (agents may not import servicing).
        extensions.add_lookup("publish_built_image", services.publish_built_image)
        # A deploy (single or bulk) of an agent whose version is pinned is refused.
        extensions.add_lookup("version_pinned", services.version_pinned)
        extensions.add_lookup("version_pinned_checker", services.version_pinned_checker)
