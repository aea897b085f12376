"""What talks to the outside world: the registry client, the broker client, the CLI."""
