"""The dead-letter store: every message that will not run again, kept, explained, and requeueable.

How a message gets here: the worker fails it (retries exhausted, non-retryable exception, hard
time limit, unknown actor, bad arguments, bad options, wrong queue) or its consumer refuses the
body (undecodable, oversized: :mod:`service.intake`); the consumer writes the reason into
the message body and moves it to the broker's dead-letter queue (``<queue>.XQ``); the mover
(:mod:`service.deadletters.mover`, in every worker process) drains that queue into the database.
If the database is down, the message waits in the broker and is moved later.

Operators use :mod:`service.deadletters.store` (list, show, stats, purge),
:mod:`service.deadletters.requeue`, or ``callboard dlq``.
"""
