"""Maintenance work done for the maintenance actors (``actors/maintenance.py``)."""
