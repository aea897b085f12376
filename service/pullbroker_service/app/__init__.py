"""Use cases: what the API calls, orchestrating domain, secrets, store and minting."""
