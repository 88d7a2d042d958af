"""What a backup is asked to do (``ExportSpec``), how hard it may push (``Tuning``), and how it
ended (``ExportResult`` with one of the four states).

Plain data shared by every pipeline and by the portal's runner.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field

from connectors.archives import FORMATS, ZIP
from connectors.archives.zip import writer as zipwriter
from connectors.naming import clean_file_name, object_key
from connectors.pipeline.ledger import Progress
from connectors.pipeline.report import ArchiveFile, FolderStats, Totals
from connectors.pipeline.series import SeriesContext
from connectors.storage.s3.growing import IN_ORDER_SAFE_AHEAD
from connectors.storage.s3.sink import MIN_PART_BYTES, RetryPolicy

# ExportResult.state (the portal's State has the same values)
COMPLETED, COMPLETED_WITH_ERRORS, FAILED_STATE, CANCELLED = (
    "completed", "completed_with_errors", "failed", "cancelled")


@dataclass
class ExportSpec:
    """What to back up and where (the request's fields)."""

    bucket: str
    file_name: str
    prefix: str = ""
    format: str = "zip"  # a name of connectors.archives.FORMATS
    include: Sequence[str] = ()
    exclude: Sequence[str] = ()
    since: dt.date | None = None
    before: dt.date | None = None
    split_bytes: int | None = None  # start a new .partNNN.zip / .partNNN.pst beyond this size
    display_name: str = ""  # PST store name
    source_description: dict = field(default_factory=dict)  # goes into summary.json (no secrets!)
    series: SeriesContext | None = None  # a run of an incremental series (connectors.pipeline.series)

    @property
    def extension(self) -> str:
        return FORMATS.get(self.format, ZIP).extension

    def key(self, suffix: str) -> str:
        """``PREFIX/FILE`` + ``suffix`` (".zip", ".report.csv"...): the stem every file shares."""
        return object_key(self.prefix, clean_file_name(self.file_name, self.extension), suffix)


@dataclass
class Tuning:
    """Engine knobs; the defaults were chosen by measurement (bench/README.md)."""

    compress_threads: int = 2
    upload_threads: int = 3
    queue_bytes: int = 16 * 1024 * 1024  # messages fetched but not yet in a part (24 MB: no faster, +10 MB RSS)
    part_bytes: int = 8 * 1024 * 1024  # first parts' target size; doubles every 1,000 parts
    min_part_bytes: int = MIN_PART_BYTES  # S3's floor; tests against rclone lower it
    spill_bytes: int = 16 * 1024 * 1024  # a part buffer bigger than this goes to a temp file
    deflate_level: int = zipwriter.DEFAULT_LEVEL
    progress_interval: float = 1.0
    cancel_interval: float = 0.5
    content_md5: bool = False  # TLS already guards transit; MD5 costs ~1 s CPU per 500 MB
    max_ahead_bytes: int = IN_ORDER_SAFE_AHEAD  # sent before part 1 of a PST (storage.s3.growing.default_max_ahead)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    tmp_dir: str | None = None

    def part_target(self, number: int) -> int:
        return max(self.part_bytes, self.min_part_bytes) * 2 ** ((number - 1) // 1000)


@dataclass
class ExportResult:
    state: str  # completed | completed_with_errors | failed | cancelled
    error: str = ""
    folders: list[FolderStats] = field(default_factory=list)
    totals: Totals = field(default_factory=Totals)
    archives: list[ArchiveFile] = field(default_factory=list)
    report_key: str = ""
    summary_key: str = ""
    started_at: str = ""
    finished_at: str = ""
    timings: dict[str, float] = field(default_factory=dict)
    progress: Progress = field(default_factory=Progress)
    resumed: bool = False
    parts: int = 0
    summary: dict = field(default_factory=dict)  # summary.json as uploaded (completed runs)
    series: dict = field(default_factory=dict)  # a series run: its cursor to commit (completed runs)
