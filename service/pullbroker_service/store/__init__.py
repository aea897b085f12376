"""Metadata stores: registry records (references to secrets, never secrets)."""
