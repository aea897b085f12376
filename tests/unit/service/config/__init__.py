"""Unit tests of pullbroker_service.config."""
