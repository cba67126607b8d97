"""Tickets, both ways: Zendesk tickets and Jira issues created from a diagnosis or linked, kept in step through their REST APIs (an outbox) and their signed webhooks."""
