"""prometheus_client multiprocess mode for a pod of worker processes, without its traps.

* The directory is wiped when the supervisor starts (stale files of an earlier run would be
  summed into this one's counters).
* A dead process's ``live*`` gauge files are removed, and its counter and histogram files are
  folded into one ``*_archive.db`` file per type: totals stay exact and monotonic, while the
  number of files (and so the scrape's cost) stays bounded however often workers recycle.
* Folding and collecting hold one lock, so a scrape never sees a dead process counted twice or
  not at all.

Only the process that serves ``/metrics`` (the supervisor) calls :func:`collect` and
:func:`retire`; children just write their values through :func:`enable`'s value class.
"""

from __future__ import annotations

import glob
import os
import shutil
import tempfile
import threading
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest, values
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.metrics_core import Metric
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

ENV = "PROMETHEUS_MULTIPROC_DIR"

#: File types whose values add up across processes and are kept after a process dies.
_SUMMED = ("counter", "histogram")

_lock = threading.Lock()

#: Bytes of an mmap file's header (its used length); a shorter file is still being created.
_HEADER_BYTES = 8


def prepare_directory(directory: Path | None) -> Path:
    """Create (or empty) the multiprocess directory; a new temporary one when ``None``."""
    if directory is None:
        return Path(tempfile.mkdtemp(prefix="callboard-metrics-"))
    directory.mkdir(parents=True, exist_ok=True)
    for entry in directory.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    return directory


def enable(directory: Path, unlabelled: Iterable[MetricWrapperBase] = ()) -> None:
    """Write this process's (and its forked children's) metric values to ``directory``.

    Call before any child is forked. prometheus_client picks its value class when it is first
    imported, which in a worker happens long before the supervisor knows its directory, so
    existing metrics are moved to the new class here: labelled ones lose the children created so
    far (none yet at start), and the ``unlabelled`` ones given are re-initialised. Unlabelled
    metrics not given keep in-process values and stay out of the exposition (a worker pod does
    not export the scheduler's gauges).
    """
    for collector in list(REGISTRY._collector_to_names):
        if isinstance(collector, MetricWrapperBase) and collector._labelnames:
            collector.clear()  # before the switch: prometheus_client refuses to clear afterwards
    os.environ[ENV] = str(directory)
    values.ValueClass = values.MultiProcessValue()
    for metric in unlabelled:
        metric._metric_init()


def enabled() -> Path | None:
    """The multiprocess directory in use, or ``None`` in single-process mode."""
    path = os.environ.get(ENV)
    return Path(path) if path else None


def retire(pid: int, directory: Path) -> None:
    """Forget process ``pid``'s live gauges and fold its counters and histograms into the archive."""
    with _lock:
        mark_process_dead(pid, str(directory))
        for kind in _SUMMED:
            dead = directory / f"{kind}_{pid}.db"
            if not dead.exists():
                continue
            archive = directory / f"{kind}_archive.db"
            _fold(dead, archive)
        # Non-live gauges of a dead pid carry a pid label and would pile up: Callboard defines
        # none, but a user's metric might.
        for path in glob.glob(str(directory / f"gauge_*_{pid}.db")):
            os.remove(path)


def _fold(dead: Path, archive: Path) -> None:
    totals: dict[str, float] = defaultdict(float)
    sources = [archive, dead] if archive.exists() else [dead]
    for source in sources:
        for key, value, _timestamp, _pos in MmapedDict.read_all_values_from_file(str(source)):
            totals[key] += value
    # Written beside, then renamed over: a reader opens either the old or the new archive. The
    # temporary name does not end in ``.db``, so the collector's glob never sees it half-written.
    staging = archive.with_suffix(".staging")
    if staging.exists():
        staging.unlink()
    merged = MmapedDict(str(staging))
    try:
        for key, total in totals.items():
            merged.write_value(key, total, 0.0)
    finally:
        merged.close()
    os.replace(staging, archive)
    dead.unlink()


class _DirectoryCollector:
    """prometheus_client's multiprocess merge over the files of ``directory`` that are ready.

    A process creates its file empty and then sizes it; a scrape that opens it in between would
    fail on the missing header (prometheus_client reads it unguarded), so files shorter than the
    header are left for the next scrape: they hold no value yet.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def collect(self) -> Iterable[Metric]:
        files = [path for path in glob.glob(str(self.directory / "*.db")) if _has_header(path)]
        return MultiProcessCollector.merge(files, accumulate=True)


def _has_header(path: str) -> bool:
    try:
        return os.path.getsize(path) >= _HEADER_BYTES
    except OSError:  # gone since the glob
        return False


def collect(directory: Path) -> bytes:
    """The text exposition of every process's metrics in ``directory``."""
    registry = CollectorRegistry()
    registry.register(_DirectoryCollector(directory))
    with _lock:
        return generate_latest(registry)
