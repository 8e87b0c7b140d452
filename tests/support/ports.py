"""Free TCP ports on 127.0.0.1 for servers a test starts (metrics, Prometheus, fake DSNs)."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A port nothing listens on right now (the caller binds it soon after)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def free_port_pair() -> int:
    """A port ``p`` such that ``p`` and ``p + 1`` are both free right now (``callboard dev``
    serves the scheduler's metrics on the port after the workers')."""
    while True:
        port = free_port()
        with socket.socket() as first, socket.socket() as second:
            try:
                first.bind(("127.0.0.1", port))
                second.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
