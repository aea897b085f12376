"""Registry kinds, records, credentials, policy and errors. No I/O here."""
