"""agentd: the program every WAOOAW agent runs (``python -m agents.agentd``).

It serves health, readiness, metrics and live config over HTTP, consumes the agent's task queue
(a Redis stream) and can be told to misbehave, so the portal's error paths are exercised for
real. It imports only the standard library and redis-py, never Django: it ships in its own image.
"""
