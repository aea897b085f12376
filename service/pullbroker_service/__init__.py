"""pullbroker broker: registry credentials in, short-lived scoped pull tokens out."""
