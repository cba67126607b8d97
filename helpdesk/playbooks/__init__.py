"""Playbooks: runbooks as versioned data, dry-run, then run against a customer as a workflow with approvals for destructive steps."""
