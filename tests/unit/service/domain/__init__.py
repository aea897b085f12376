"""Unit tests of pullbroker_service.domain."""
