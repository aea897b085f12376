"""Unit tests of pullbroker_service.bootstrap."""
