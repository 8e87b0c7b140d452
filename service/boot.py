"""Module for the stock Dramatiq command: ``dramatiq service.boot``.

Importing it builds the broker with Callboard's whole middleware stack (from the same settings
as ``callboard worker``) and loads every actor module, so Dramatiq's own CLI runs the same actors
under the same stack, with the same heartbeat and rescuer in each worker process
(:class:`service.worker.stock.StockWorkerHeartbeat`). Process recycling is a ``callboard worker``
feature; the rest applies.
"""

from __future__ import annotations

from config.settings import get_settings
from service import runtime
from service.logs import configure_logging
from service.worker.stock import StockWorkerHeartbeat

configure_logging(get_settings())
broker = runtime.get_broker()
broker.add_middleware(StockWorkerHeartbeat())
runtime.load_actors()
