"""The node-local authenticating registry mirror (`pullbroker-sidecar run --mirror`).

server.py     asyncio HTTP/1.1 server on the daemon's loop; who may connect
wire.py       request heads, answers, sendfile, Range
routes.py     upstream host and repository from `?ns=`, a path prefix, or Docker Hub
upstream.py   per-repository broker authorizers, per-registry threaded fetchers
manifests.py  tags upstream every time; digests from the node store
blobs.py      blobs from the store, or through one download
downloads.py  one upstream download per blob, streamed to every reader as it grows
collect.py    least-recently-used collection of the store down to its size
peers.py      the uid owning a loopback TCP client (/proc/net/tcp{,6})
answers.py    failures -> OCI error answers (status, code, Retry-After)
config.py     settings
"""
