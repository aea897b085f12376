"""pullbroker sidecar: the node agent that pulls images with short-lived tokens."""
