"""Unit tests of pullbroker_service.api."""
