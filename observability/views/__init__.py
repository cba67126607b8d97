"""Observability's pages: Logs, Events, Alerts (with the alert buttons), Metrics, and the
header's agent context switcher; one module each, sharing ``shared``'s filters.

Every page honours the agent context (``observability.context``): ``?agent=<slug>`` in the URL
shows one agent and remembers the choice; without it the page redirects to the remembered one,
so the URL always says what the page shows. Filters live in the URL too. Views read the
request, call one service (``logs``, ``events``, ``alerts``, ``figures``) and render the page,
or for htmx the partial it swaps; the markup lives once, in the partials of
``observability/templates/observability/``.
"""
