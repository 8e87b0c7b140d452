"""Health: worker heartbeats, reachability probes, the component checks, and the HTTP endpoints."""
