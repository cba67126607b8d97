from django.apps import AppConfig


class HelpdeskConfig(AppConfig):
    name = "helpdesk"
    verbose_name = "Help desk"

    def ready(self) -> None:
        # Imported here, not at the top: models and the other apps are ready only now.
        from helpdesk import tasks  # noqa: F401 (registers the Celery tasks)
