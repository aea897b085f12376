"""Unit tests of pullbroker_sidecar.integrations."""
