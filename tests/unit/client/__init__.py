"""Unit tests of pullbroker_client: the registry client and the admin CLI."""
