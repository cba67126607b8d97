"""The agents app's pages: ``fleet`` (the agents page), ``detail`` (one agent, its history and
its actions), ``errors`` (the Errors page and panels), ``bulk`` (bulk operations).

Views read the request, call one service, and render a page or, for htmx, the fragment it
swaps; ``shared`` holds what pages and the live updates (``agents.live``) both render. The
markup lives once, in the partials of the app's templates.
"""
