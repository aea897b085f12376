"""Unit tests of pullbroker_client.cli."""
