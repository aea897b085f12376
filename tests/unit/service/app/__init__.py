"""Unit tests of pullbroker_service.app: the use cases."""
