"""Unit tests of pullbroker_service.store."""
