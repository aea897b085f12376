"""`pullbroker-sidecar run`: the node daemon the runtime helpers talk to over a Unix socket.

Nothing is imported here: the helpers import `daemon.protocol` alone and must start fast.
"""
