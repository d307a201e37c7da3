"""Admission webhooks (validating and mutating) and the rule engine they share with the
operator and the CLI."""
