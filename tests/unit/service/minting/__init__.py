"""Unit tests of pullbroker_service.minting."""
