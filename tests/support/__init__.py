"""Helpers shared by the test tiers: services, worker processes, recorded completions, faults."""
