"""Quick actions on a customer and its agents (restart, scale, clear cache, reset trial, resend email, grant temporary access, redrive dead letters), Operator, audited."""
