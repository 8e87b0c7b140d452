"""Callboard configuration: settings, the queue catalogue, task policies and the schedule file.

This package imports nothing else of Callboard's; every other package may import it.
"""
