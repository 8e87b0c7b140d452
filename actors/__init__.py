"""The actors Callboard ships, one module per domain. Loaded by name (``service.runtime``)."""
