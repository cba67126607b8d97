"""Queues and dead letters: every agent's task stream and the portal's own Celery queue.

- ``catalog``: which queues there are and what each one's name means;
- ``figures``: what Redis says about them right now, and their health against thresholds;
- ``sampler``: those figures sampled on an interval into ``QueueSample`` (history, rates);
- ``deadletters``: reading a dead-letter queue by keyset pages and by error group;
- ``redrive``: the tracked jobs that send dead letters back to their stream or delete them;
- ``pending``: pending entries per consumer, stuck consumers, claiming and redelivering;
- ``services``: every change an operator makes, permission-checked and audited;
- ``live``: the live topics the pages subscribe to.
"""
