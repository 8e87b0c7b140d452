"""Deleting old files, only inside the directories an operator allowed.

Containment rules (``docs/security.md``):

* A root must be absolute, must not contain a ``..`` component, and must resolve (symlinks
  followed) to one of ``CALLBOARD_CLEANUP_ROOTS`` (each resolved too) or a directory below one;
  anything else raises :class:`CleanupRefusedError` before a file is touched.
* ``pattern`` matches file *names* (``fnmatch``, case-sensitive); a pattern with a path separator
  or ``..`` is refused.
* The walk never follows a symbolic link: directories are opened relative to their parent's
  descriptor with ``O_NOFOLLOW`` and files are removed with ``unlinkat`` on that descriptor, so a
  directory swapped for a symlink during the walk is not entered. Symlinks themselves are never
  deleted (they may be part of a deployment's layout) and are counted as ``symlinks_skipped``.
* Only regular files older than the cut-off (by modification time) are deleted; directories
  stay, even when empty. A file that cannot be read or removed is counted in ``errors`` and the
  walk goes on.
"""

from __future__ import annotations

import fnmatch
import os
import stat
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from config.settings import Settings
from service.errors import BadInputError

#: The directory under ``CALLBOARD_DATA_DIR`` that is Callboard's own temp area.
TEMP_DIR_NAME = "tmp"

_OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


class CleanupRefusedError(BadInputError):
    """A cleanup root or pattern is outside what ``CALLBOARD_CLEANUP_ROOTS`` allows, or malformed."""


@dataclass(slots=True)
class CleanupReport:
    """What one cleanup did: files deleted and their bytes, what it left and why."""

    root: str
    pattern: str
    max_age_days: float
    deleted: int = 0
    bytes: int = 0
    kept: int = 0  # matching files younger than the cut-off
    symlinks_skipped: int = 0
    errors: int = 0

    def asdict(self) -> dict[str, Any]:
        """The report as a JSON-able dict (the actors' return value and log fields)."""
        return asdict(self)


def allowed_root(root: str, allowed: list[str]) -> Path:
    """``root`` resolved, if it lies in one of the ``allowed`` roots; raises
    :class:`CleanupRefusedError` with one line saying why not."""
    if not isinstance(root, str) or not root:
        raise CleanupRefusedError(f"cleanup root must be a non-empty path (got {root!r})")
    path = Path(root)
    if not path.is_absolute():
        raise CleanupRefusedError(f"cleanup root must be absolute (got {root!r})")
    if ".." in path.parts:
        raise CleanupRefusedError(f"cleanup root must not contain '..' (got {root!r})")
    if not allowed:
        raise CleanupRefusedError("no cleanup roots are allowed: set CALLBOARD_CLEANUP_ROOTS")
    resolved = path.resolve()
    for base in allowed:
        if resolved.is_relative_to(Path(base).resolve()):
            if not resolved.exists():
                raise CleanupRefusedError(f"cleanup root {root!r} does not exist")
            if not resolved.is_dir():
                raise CleanupRefusedError(f"cleanup root {root!r} is not a directory")
            return resolved
    raise CleanupRefusedError(f"cleanup root {root!r} is not inside CALLBOARD_CLEANUP_ROOTS")


def check_pattern(pattern: str) -> str:
    """``pattern`` if it is a file-name pattern; raises :class:`CleanupRefusedError` otherwise."""
    if not isinstance(pattern, str) or not pattern:
        raise CleanupRefusedError(f"cleanup pattern must be a non-empty file-name pattern (got {pattern!r})")
    if "/" in pattern or os.sep in pattern or ".." in pattern:
        raise CleanupRefusedError(
            f"cleanup pattern matches file names only: no '/' or '..' (got {pattern!r})"
        )
    return pattern


def check_age(max_age_days: object) -> float:
    """``max_age_days`` as a float if it is a number ≥ 0; raises :class:`CleanupRefusedError`."""
    if isinstance(max_age_days, bool) or not isinstance(max_age_days, int | float) or max_age_days < 0:
        raise CleanupRefusedError(f"max_age_days must be a number >= 0 (got {max_age_days!r})")
    return float(max_age_days)


def cleanup_old_files(root: str, max_age_days: float, pattern: str, settings: Settings) -> CleanupReport:
    """Delete regular files named like ``pattern`` under ``root`` older than ``max_age_days``.

    ``root`` must be allowed by ``CALLBOARD_CLEANUP_ROOTS`` (see the module docstring); raises
    :class:`CleanupRefusedError` before touching anything otherwise.
    """
    age = check_age(max_age_days)
    resolved = allowed_root(root, settings.cleanup_roots)
    return delete_old(resolved, age, check_pattern(pattern))


def temp_dir(settings: Settings) -> Path:
    """Callboard's own temp area: ``<CALLBOARD_DATA_DIR>/tmp`` (actors may keep scratch files there)."""
    return (settings.data_dir / TEMP_DIR_NAME).resolve()


def cleanup_temp_files(settings: Settings) -> CleanupReport:
    """Delete files in :func:`temp_dir` older than ``CALLBOARD_CLEANUP_TEMP_MAX_AGE``; a missing
    temp area, or one that is a symlink, is an empty report."""
    area = settings.data_dir / TEMP_DIR_NAME
    age_days = settings.cleanup_temp_max_age / 86400
    if area.is_symlink() or not area.is_dir():  # a symlinked temp area is not followed either
        return CleanupReport(str(temp_dir(settings)), "*", age_days)
    return delete_old(temp_dir(settings), age_days, "*")


def delete_old(root: Path, max_age_days: float, pattern: str) -> CleanupReport:
    """Delete the old matching files under the already-checked ``root`` (never follows symlinks)."""
    found = CleanupReport(str(root), pattern, max_age_days)
    cutoff = time.time() - max_age_days * 86400
    fd = os.open(root, _OPEN_DIR)
    try:
        _walk(fd, pattern, cutoff, found)
    finally:
        os.close(fd)
    return found


def _walk(dir_fd: int, pattern: str, cutoff: float, found: CleanupReport) -> None:
    try:
        with os.scandir(dir_fd) as entries:
            listed = list(entries)
    except OSError:
        found.errors += 1
        return
    for entry in listed:
        try:
            info = entry.stat(follow_symlinks=False)
        except OSError:
            found.errors += 1
            continue
        if stat.S_ISLNK(info.st_mode):
            found.symlinks_skipped += 1
        elif stat.S_ISDIR(info.st_mode):
            try:
                child = os.open(entry.name, _OPEN_DIR, dir_fd=dir_fd)
            except OSError:  # ELOOP: replaced by a symlink since it was listed
                found.errors += 1
                continue
            try:
                _walk(child, pattern, cutoff, found)
            finally:
                os.close(child)
        elif stat.S_ISREG(info.st_mode) and fnmatch.fnmatchcase(entry.name, pattern):
            if info.st_mtime >= cutoff:
                found.kept += 1
                continue
            try:
                os.unlink(entry.name, dir_fd=dir_fd)
            except OSError:
                found.errors += 1
                continue
            found.deleted += 1
            found.bytes += info.st_size
