"""Unit tests of pullbroker_service.secrets."""
