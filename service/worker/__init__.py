"""Worker processes: the per-process runner and the supervisor that keeps N of them alive."""
