"""Plumbing every layer may use: structured logging with redaction, the per-call context,
and the one-thread SQLite worker."""
