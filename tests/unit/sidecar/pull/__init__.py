"""Unit tests of pullbroker_sidecar.pull."""
