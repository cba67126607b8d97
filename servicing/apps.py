from django.apps import AppConfig


class ServicingConfig(AppConfig):
    name = "servicing"
    verbose_name = "Servicing"

    def ready(self) -> None:
        # Imported here, not at the top: models and the other apps are ready only now.
        from portal import extensions
        from portal.startup import STARTUP_STEPS
        from servicing import api, services

        if services.seed_step not in STARTUP_STEPS:
            STARTUP_STEPS.append(services.seed_step)  # the first release, 1.0.0
        extensions.add_api_router(api.router)  # /api/platform/servicing
        extensions.add_api_router(api.agent_router)  # /api/platform/agents/{slug}/versions
        _mount_ahead_of_the_others(api.agent_router)
        # ``agents build-image`` publishes the image it built as a release through this lookup
        # (agents may not import servicing).
        extensions.add_lookup("publish_built_image", services.publish_built_image)


def _mount_ahead_of_the_others(router) -> None:
    """Move ``router`` to the front of the API's routers, so that its paths are tried before
    another router's path with a parameter in the same place: Django takes the first URL
    pattern that matches, and the agents router's ``POST /agents/{slug}/{action}`` matches
    ``/agents/{slug}/versions`` too (answering GET with 405). django-ninja has no public way to
    order routers; until ``portal.api.add_router`` offers one, its registration list is
    reordered here, before the URLs are built (``tests/servicing/test_api.py`` checks it)."""
    from portal.api import api

    registrations = api._router_registrations
    mine = [entry for entry in registrations if entry[1] is router]
    if mine and registrations[0] is not mine[0]:
        registrations.remove(mine[0])
        registrations.insert(0, mine[0])
