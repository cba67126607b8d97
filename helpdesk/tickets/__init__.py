"""Tickets, both ways: Zendesk tickets and Jira issues created from a diagnosis or linked, kept in
step through their REST APIs (an outbox) and their signed webhooks.

Configuration (environment; a system whose URL is empty is off, and every door says so):

- ``ZENDESK_URL`` (``https://acme.zendesk.com``), ``ZENDESK_EMAIL`` and ``ZENDESK_API_TOKEN``
  (basic auth ``{email}/token:{api_token}``), ``ZENDESK_WEBHOOK_SECRET`` (the webhook's
  signing secret).
- ``JIRA_URL`` (``https://acme.atlassian.net``), ``JIRA_EMAIL`` and ``JIRA_API_TOKEN`` (basic
  auth), ``JIRA_PROJECT`` (the project new issues go to, ``SUP``), ``JIRA_WEBHOOK_SECRET``.

Webhooks to register on the remote side (no session or token; the signature authenticates):

- Zendesk: ``POST {portal}/api/platform/helpdesk/webhooks/zendesk``, subscribed to the ticket
  events (status, priority, subject, assignee changed, comment added) or called by a trigger
  with ``{"ticket": {"id", "status", "priority", "subject", "assignee_email", "updated_at"}}``.
- Jira: ``POST {portal}/api/platform/helpdesk/webhooks/jira`` with a secret, for "issue
  updated" and "comment created".

The pieces: ``clients`` (HTTP), ``services`` (create, link, update, resolve; the outbox rows),
``outbox`` (sending them once), ``webhooks`` (incoming), ``api``, ``cli``, ``views`` and
``panel`` (the doors), ``tasks`` (the Celery task and the sweep).
"""
