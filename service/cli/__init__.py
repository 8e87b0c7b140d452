"""The ``callboard`` command: the composition root of Callboard's processes."""
