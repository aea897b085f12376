"""Unit tests of pullbroker_service.infra."""
