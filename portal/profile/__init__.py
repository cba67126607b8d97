"""Your profile: who you are, your role and where it comes from, your sessions and your own API
tokens. Services in ``services`` (tokens, sign-outs, the role's origin) and ``sessions`` (the
rows that follow each browser session); doors in ``views`` (the page), ``api`` (``/me``...)."""
