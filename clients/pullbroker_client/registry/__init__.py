"""OCI/Docker distribution client: references, challenges, token auth, manifests, blobs."""
