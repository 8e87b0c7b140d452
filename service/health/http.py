"""One small HTTP server per pod process: ``/metrics``, ``/healthz`` and ``/readyz``.

``/healthz`` (liveness) and ``/readyz`` (readiness) answer ``200 {"status": "ok"}`` or
``503 {"status": "fail", "problems": [...]}``; Kubernetes restarts a pod that fails liveness and
takes one that fails readiness out of its Service. The server runs in a daemon thread and never
blocks the process it reports on.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST

from service.errors import ConfigurationError
from service.logs import log_event

logger = logging.getLogger(__name__)

Problems = Callable[[], list[str]]


class HealthServer:
    """Serve ``metrics()`` (exposition bytes) and the two probes on ``host:port``.

    Parameters:
      host(str), port(int): where to listen; port 0 picks a free one (see :attr:`port`).
      metrics: returns the text exposition.
      liveness, readiness: return the list of problems, empty when healthy.
    """

    def __init__(
        self, host: str, port: int, *, metrics: Callable[[], bytes], liveness: Problems, readiness: Problems
    ) -> None:
        routes: dict[str, Callable[[], tuple[int, str, bytes]]] = {
            "/metrics": lambda: (200, CONTENT_TYPE_LATEST, metrics()),
            "/healthz": lambda: _probe(liveness),
            "/readyz": lambda: _probe(readiness),
        }

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                route = routes.get(self.path.split("?", 1)[0])
                if route is None:
                    status, kind, body = 404, "text/plain", b"not found\n"
                else:
                    try:
                        status, kind, body = route()
                    except Exception as error:  # a failing collector must not kill the server
                        status, kind = 500, "text/plain"
                        body = f"{type(error).__name__}: {error}\n".encode()
                        logger.exception("%s failed", self.path)
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass  # probes every few seconds would drown the logs

        try:
            self._server = ThreadingHTTPServer((host, port), Handler)
        except OSError as error:
            raise ConfigurationError(
                f"CALLBOARD_METRICS_PORT: cannot listen on {host}:{port}: {error.strerror}"
            ) from None
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="callboard-metrics", daemon=True
        )

    @property
    def port(self) -> int:
        """The port listened on."""
        return int(self._server.server_address[1])

    def start(self) -> HealthServer:
        """Start serving in a daemon thread; returns ``self``."""
        self._thread.start()
        log_event(logger, logging.INFO, "metrics.serving", port=self.port)
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()


def _probe(problems: Problems) -> tuple[int, str, bytes]:
    found = problems()
    body = {"status": "fail", "problems": found} if found else {"status": "ok"}
    return (503 if found else 200), "application/json", (json.dumps(body) + "\n").encode()
