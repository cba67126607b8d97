from django.apps import AppConfig


class FactoryConfig(AppConfig):
    name = "factory"
    verbose_name = "Factory"

    def ready(self) -> None:
        # Imported here, not at the top: models and the other apps are ready only now.
        from factory import api, creation, tasks  # noqa: F401 - tasks registers the Celery tasks
        from factory.services import sandbox, templates
        from portal import extensions, work
        from portal.startup import STARTUP_STEPS

        creation.register_all()  # its step kinds and the creation workflow
        work.register_sweeper("sandboxes", sandbox.sweep)  # runs whose worker died
        if templates.seed_step not in STARTUP_STEPS:
            STARTUP_STEPS.append(templates.seed_step)
        extensions.add_api_router(api.router)  # /api/platform/factory
