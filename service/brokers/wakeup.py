"""Blocking wake-up for idle Redis consumers.

Dramatiq's Redis consumer polls an empty queue with backoff up to one second, so a message sent
to an idle worker waits tens to hundreds of milliseconds. Producers publish the queue name on one
channel when they push onto a short queue; one listener thread per process turns that into a
per-queue :class:`threading.Event` that idle consumers wait on. Polling stays as the fallback, so
a lost notification costs latency, never a message.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import defaultdict

import redis

logger = logging.getLogger(__name__)

#: The pub/sub channel producers notify; the payload is the queue name.
CHANNEL_SUFFIX = ":callboard.wakeup"

#: Producers notify while the queue holds at most this many messages: a longer queue means
#: consumers are busy fetching and need no wake-up, which keeps notifications off the bulk path.
NOTIFY_BELOW = 16

NOTIFY_SCRIPT = """
if redis.call('llen', KEYS[1]) <= tonumber(ARGV[3]) then
    redis.call('publish', ARGV[1], ARGV[2])
end
"""


class WakeUps:
    """Events set by producers' notifications of their queue; one listener thread per process."""

    def __init__(self, client: redis.Redis, channel: str) -> None:
        self._client = client
        self.channel = channel
        self._events: defaultdict[str, set[threading.Event]] = defaultdict(set)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    def subscribe(self, queue_name: str, event: threading.Event) -> None:
        """Set ``event`` whenever a producer notifies ``queue_name``; starts the listener."""
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._listen, name="callboard-wakeup", daemon=True)
                self._thread.start()
            self._events[queue_name].add(event)

    def stop(self) -> None:
        """Ask the listener to stop; it exits at its next wake-up (at most one second)."""
        self._stopping.set()

    def _listen(self) -> None:
        backoff = 0.1
        while not self._stopping.is_set():
            pubsub = self._client.pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.subscribe(self.channel)
                backoff = 0.1
                self.wake_all()  # anything sent while we were not listening
                while not self._stopping.is_set():
                    message = pubsub.get_message(timeout=1.0)
                    if message is not None:
                        for event in list(self._events.get(message["data"].decode(), ())):
                            event.set()
            except (redis.ConnectionError, redis.TimeoutError, OSError) as error:
                logger.debug("wake-up listener lost its connection: %s", error)
                self.wake_all()
                time.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            finally:
                # Closing a broken connection may fail again; there is nothing more to do.
                with contextlib.suppress(Exception):
                    pubsub.close()

    def wake_all(self) -> None:
        """Set every subscribed event: consumers poll now (reconnects, shutdown)."""
        for events in list(self._events.values()):
            for event in list(events):
                event.set()
