"""File cleanup on a real filesystem: only inside allowed roots, never through a symlink, only old
files matching the pattern, with counts and bytes reported."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from config.settings import Settings, load_settings
from service.maintenance import files
from service.maintenance.files import CleanupRefusedError

DAY = 86400.0


def make(path: Path, size: int, age_days: float) -> Path:
    """A file of ``size`` bytes last modified ``age_days`` ago."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    moment = time.time() - age_days * DAY
    os.utime(path, (moment, moment))
    return path


@pytest.fixture
def layout(tmp_path: Path) -> dict[str, Path]:
    allowed = tmp_path / "allowed"
    outside = tmp_path / "outside"
    return {
        "allowed": allowed,
        "outside": outside,
        "old_log": make(allowed / "a.log", 100, 10),
        "old_nested_log": make(allowed / "deep" / "er" / "b.log", 50, 10),
        "young_log": make(allowed / "c.log", 7, 1),
        "old_txt": make(allowed / "d.txt", 9, 10),
        "victim": make(outside / "victim.log", 1000, 10),
        "victim_in_dir": make(outside / "dir" / "e.log", 1000, 10),
    }


def settings_for(*roots: Path) -> Settings:
    return load_settings(cleanup_roots=",".join(str(root) for root in roots))


def test_deletes_only_old_matching_files_and_reports_counts_and_bytes(layout: dict[str, Path]) -> None:
    found = files.cleanup_old_files(str(layout["allowed"]), 7, "*.log", settings_for(layout["allowed"]))
    assert found.asdict() == {
        "root": str(layout["allowed"].resolve()),
        "pattern": "*.log",
        "max_age_days": 7.0,
        "deleted": 2,
        "bytes": 150,
        "kept": 1,
        "symlinks_skipped": 0,
        "errors": 0,
    }
    assert not layout["old_log"].exists() and not layout["old_nested_log"].exists()
    assert layout["young_log"].exists() and layout["old_txt"].exists()
    assert (layout["allowed"] / "deep" / "er").is_dir()  # directories stay


def test_a_subdirectory_of_an_allowed_root_is_allowed(layout: dict[str, Path]) -> None:
    found = files.cleanup_old_files(str(layout["allowed"] / "deep"), 7, "*", settings_for(layout["allowed"]))
    assert (found.deleted, found.bytes) == (1, 50)
    assert layout["old_log"].exists()


def test_symlinks_inside_the_root_are_never_followed_nor_deleted(layout: dict[str, Path]) -> None:
    allowed, outside = layout["allowed"], layout["outside"]
    (allowed / "to-dir").symlink_to(outside / "dir", target_is_directory=True)
    (allowed / "to-file.log").symlink_to(layout["victim"])
    old = time.time() - 10 * DAY
    os.utime(allowed / "to-file.log", (old, old), follow_symlinks=False)
    found = files.cleanup_old_files(str(allowed), 7, "*.log", settings_for(allowed))
    assert found.symlinks_skipped == 2 and found.deleted == 2
    assert layout["victim"].exists() and layout["victim_in_dir"].exists()
    assert (allowed / "to-dir").is_symlink() and (allowed / "to-file.log").is_symlink()


@pytest.mark.parametrize(
    ("root", "message"),
    [
        ("{outside}", "is not inside CALLBOARD_CLEANUP_ROOTS"),
        ("{allowed}/../outside", "must not contain '..'"),
        ("{allowed}/link-out", "is not inside CALLBOARD_CLEANUP_ROOTS"),  # a symlink escaping the root
        ("relative/dir", "must be absolute"),
        ("{allowed}/a.log", "is not a directory"),
        ("{allowed}/missing", "does not exist"),
        ("/", "is not inside CALLBOARD_CLEANUP_ROOTS"),
    ],
)
def test_roots_outside_the_allowed_list_are_refused(layout: dict[str, Path], root: str, message: str) -> None:
    (layout["allowed"] / "link-out").symlink_to(layout["outside"], target_is_directory=True)
    path = root.format(allowed=layout["allowed"], outside=layout["outside"])
    with pytest.raises(CleanupRefusedError, match=message):
        files.cleanup_old_files(path, 0, "*", settings_for(layout["allowed"]))
    assert layout["victim"].exists() and layout["old_log"].exists()


def test_no_allowed_roots_bad_patterns_and_bad_ages_are_refused(layout: dict[str, Path]) -> None:
    root = str(layout["allowed"])
    with pytest.raises(CleanupRefusedError, match="set CALLBOARD_CLEANUP_ROOTS"):
        files.cleanup_old_files(root, 1, "*", load_settings())
    allowed = settings_for(layout["allowed"])
    for pattern in ("../outside/*", "deep/*.log", ""):
        with pytest.raises(CleanupRefusedError, match="pattern"):
            files.cleanup_old_files(root, 1, pattern, allowed)
    for age in (-1, "7", True):
        with pytest.raises(CleanupRefusedError, match="max_age_days must be a number"):
            files.cleanup_old_files(root, age, "*", allowed)  # type: ignore[arg-type]
    assert layout["old_log"].exists()


def test_temp_files_are_cleaned_in_the_data_dirs_tmp_only(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path / "var", cleanup_temp_max_age="2d")
    assert files.cleanup_temp_files(settings).deleted == 0  # no temp area yet: nothing to do
    make(tmp_path / "var" / "tmp" / "old.bin", 10, 3)
    young = make(tmp_path / "var" / "tmp" / "young.bin", 10, 1)
    beside = make(tmp_path / "var" / "callboard.db", 10, 30)
    found = files.cleanup_temp_files(settings)
    assert (found.deleted, found.bytes, found.kept) == (1, 10, 1)
    assert young.exists() and beside.exists()


def test_a_symlinked_temp_area_is_not_followed(tmp_path: Path) -> None:
    victim = make(tmp_path / "elsewhere" / "old.bin", 10, 30)
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "tmp").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    found = files.cleanup_temp_files(load_settings(data_dir=tmp_path / "var"))
    assert found.deleted == 0 and victim.exists()
