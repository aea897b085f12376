"""Unit tests of pullbroker_sidecar.daemon."""
