"""The APScheduler daemon that holds the periodic schedule (built by the scheduler issue)."""
