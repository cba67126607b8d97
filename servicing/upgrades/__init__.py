"""Upgrades: an agent taken from one release to another by blue-green, canary or rolling, as a
workflow with gates and automatic roll-back. ``requests`` is the doors' service layer;
``workflow`` the steps; ``gates`` the measurements and verdicts; ``traffic`` and ``replicas``
what moves at the runtime."""
