"""Callboard's middleware: one public middleware per module, hook methods only.

The stack and its order are built in one place, :func:`service.brokers.factory.build_broker`.
"""
