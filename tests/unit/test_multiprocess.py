"""The pod's metrics directory: a dead process's counters are folded into the archive with exact
totals, and a file still being created does not fail a scrape."""

from __future__ import annotations

from pathlib import Path

from prometheus_client.mmap_dict import MmapedDict, mmap_key

from service.metrics import multiprocess

KEY = mmap_key("t_messages", "t_messages_total", ["outcome"], ["success"], "help")


def write(path: Path, value: float) -> None:
    values = MmapedDict(str(path))
    values.write_value(KEY, value, 0.0)
    values.close()


def test_dead_processes_fold_into_the_archive_with_exact_totals(tmp_path: Path) -> None:
    write(tmp_path / "counter_101.db", 3)
    write(tmp_path / "counter_102.db", 4)
    write(tmp_path / "counter_103.db", 5)  # still alive
    multiprocess.retire(101, tmp_path)
    multiprocess.retire(102, tmp_path)
    assert sorted(path.name for path in tmp_path.glob("*.db")) == ["counter_103.db", "counter_archive.db"]
    assert 't_messages_total{outcome="success"} 12.0' in multiprocess.collect(tmp_path).decode()


def test_a_file_still_being_created_is_left_for_the_next_scrape(tmp_path: Path) -> None:
    write(tmp_path / "counter_201.db", 2)
    (tmp_path / "counter_202.db").touch()  # created, not yet sized by its process
    assert 't_messages_total{outcome="success"} 2.0' in multiprocess.collect(tmp_path).decode()
