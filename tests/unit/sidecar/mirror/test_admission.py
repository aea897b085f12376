"""Who may use the mirror: decided from the connecting socket's owner (from /proc/net/tcp),
whatever the address it came from."""

from __future__ import annotations

from pullbroker_sidecar.mirror.server import admission

ROOT_ONLY = frozenset({0})
LOOPBACK = ("127.0.0.1", 40000)
NODE_IP = ("10.1.2.3", 40000)  # the node's own address: never dialled, only judged


class TestAdmission:
    def test_an_allowed_local_user_is_served(self) -> None:
        assert admission(LOOPBACK, 0, ROOT_ONLY, allow_remote=False) is None

    def test_another_local_user_is_refused_with_the_flag_to_use(self) -> None:
        refused = admission(LOOPBACK, 65534, ROOT_ONLY, allow_remote=False)
        assert refused is not None
        assert (refused.status, refused.code) == (403, "DENIED")
        assert "local user 65534" in refused.message
        assert "--mirror-allow-uid" in refused.message

    def test_an_allowed_uid_flag_admits_that_user(self) -> None:
        assert admission(LOOPBACK, 1000, frozenset({0, 1000}), allow_remote=False) is None

    def test_unknown_owner_on_loopback_is_refused(self) -> None:
        """The owner could not be found (a race, a namespace): fail closed, even with
        --mirror-allow-remote."""
        for allow_remote in (False, True):
            refused = admission(LOOPBACK, None, ROOT_ONLY, allow_remote=allow_remote)
            assert refused is not None
            assert refused.status == 403

    def test_a_local_user_through_the_node_address_is_still_judged(self) -> None:
        """With --mirror-allow-remote and the mirror bound beyond loopback, a local user
        connecting to the node's own IP has a local socket owner: refused unless allowed."""
        refused = admission(NODE_IP, 65534, ROOT_ONLY, allow_remote=True)
        assert refused is not None
        assert "local user 65534" in refused.message
        assert admission(NODE_IP, 0, ROOT_ONLY, allow_remote=True) is None

    def test_another_host_only_with_allow_remote(self) -> None:
        """No local owner: another host. Served only when the operator allowed it."""
        assert admission(NODE_IP, None, ROOT_ONLY, allow_remote=True) is None
        refused = admission(NODE_IP, None, ROOT_ONLY, allow_remote=False)
        assert refused is not None
        assert "own runtimes only" in refused.message
