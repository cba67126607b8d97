from django.apps import AppConfig

# The parts of the help desk; each has ``setup.register()``, ``urls`` and ``cli``.
PARTS = ("tickets", "detective", "actions", "playbooks")


class HelpdeskConfig(AppConfig):
    name = "helpdesk"
    verbose_name = "Help desk"

    def ready(self) -> None:
        # Imported here, not at the top: models and the other apps are ready only now.
        from importlib import import_module

        from helpdesk import api, links, tasks  # noqa: F401 (tasks registers the Celery tasks)
        from portal import extensions

        extensions.add_api_router(api.router)  # /api/platform/helpdesk
        # The factory links a Customer-tier agent it makes to the customer its owner names.
        extensions.add_lookup("link_customer_agent", links.link_customer_agent)
        for part in PARTS:
            import_module(f"helpdesk.{part}.setup").register()
