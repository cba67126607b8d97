"""The workflow engine (issue 16): multi-step work across agents that people watch, pause,
retry and roll back. Definitions are data (``definitions``); step kinds, including those other
apps add, come from a registry, so the engine imports none of them.
"""
