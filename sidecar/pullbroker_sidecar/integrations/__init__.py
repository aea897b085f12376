"""Node integrations: kubelet provider, docker credential helper, pull secrets."""
