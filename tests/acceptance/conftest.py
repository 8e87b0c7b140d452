"""Acceptance tests start whole ``callboard`` commands; they reuse the integration fixtures."""

from tests.integration.conftest import start_worker

__all__ = ["start_worker"]
