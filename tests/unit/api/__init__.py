"""Unit tests of the broker API surface, its startup pieces and the broker client/CLI."""
