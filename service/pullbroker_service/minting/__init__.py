"""Turning long-lived credentials into short-lived, repository-scoped tokens."""
