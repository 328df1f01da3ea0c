"""Watched drop folder for HL7 v2 files, feeding the same message store as the MLLP listener.

The folder is scanned every few seconds. A file is read only once it is
complete, and the watcher recognises a complete file in two ways:

- names starting with "." or ending with .tmp, .part or .partial are
  skipped, so a sender that writes under such a name and then renames
  the file (an atomic rename on the same file system) is never read early;
- any other file is read once its size and modification time have not
  changed for `settle_seconds`.

Each message of a file is checked as an MLLP frame would be, then
committed to the store (the same de-duplication on MSH-3, MSH-4 and
MSH-10 applies). Only then is the file moved to `done/`, or to `failed/`
when at least one message was rejected, with a `.errors.txt` file beside
it that gives each rejected message's number, line, location and reason.
The messages of a failed file that passed are stored all the same. A
crash before the move leaves the file in place, and the next scan reads
it again without creating duplicates.
"""

import logging
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from ..i18n import t
from .hl7v2 import split_messages
from .mllp import MessageTypes, check_message, decode_frame

log = logging.getLogger(__name__)

DONE_FOLDER = "done"
FAILED_FOLDER = "failed"
PARTIAL_SUFFIXES = (".tmp", ".part", ".partial")
DEFAULT_SETTLE_SECONDS = 2.0
DEFAULT_SCAN_INTERVAL = 1.0


@dataclass
class DropCounts:
    """Outcome of the files processed so far."""

    files_done: int = 0
    files_failed: int = 0
    stored: int = 0
    duplicates: int = 0
    rejected: int = 0
    outside_cohort: int = 0


class DropFolder:
    """Watcher of one folder. `scan` processes the files that are complete."""

    def __init__(self, folder: Path, store, *, settle_seconds: float = DEFAULT_SETTLE_SECONDS,
                 message_types: MessageTypes | None = None, in_cohort=None):
        self.folder = Path(folder)
        self.store = store
        self.settle_seconds = settle_seconds
        self.message_types = message_types
        self.in_cohort = in_cohort
        self.counts = DropCounts()
        self.done_folder = self.folder / DONE_FOLDER
        self.failed_folder = self.folder / FAILED_FOLDER
        self.done_folder.mkdir(parents=True, exist_ok=True)
        self.failed_folder.mkdir(parents=True, exist_ok=True)
        # Path -> ((size, mtime_ns), monotonic time when that signature was first seen).
        self._seen: dict[Path, tuple[tuple[int, int], float]] = {}

    def scan(self) -> int:
        """Process every complete file once and return the number of files moved."""
        moved = 0
        present = set()
        for path in sorted(self.folder.iterdir()):
            if not self._candidate(path):
                continue
            present.add(path)
            if self._settled(path) and self._process(path):
                moved += 1
                present.discard(path)
        self._seen = {path: seen for path, seen in self._seen.items() if path in present}
        return moved

    def run(self, stop_event: threading.Event, interval: float = DEFAULT_SCAN_INTERVAL) -> None:
        """Scan every `interval` seconds until `stop_event` is set."""
        log.info("HL7 v2 drop folder %s watched (settle time %s s, scan every %s s)",
                 self.folder, self.settle_seconds, interval)
        while not stop_event.is_set():
            try:
                self.scan()
            except OSError as error:
                log.error("scan of the drop folder %s failed, retrying in %s s: %s", self.folder, interval, error)
            stop_event.wait(interval)
        log.info("HL7 v2 drop folder %s no longer watched (%s)", self.folder,
                 ", ".join(f"{name.replace('_', ' ')}: {value}" for name, value in vars(self.counts).items()))

    @staticmethod
    def _candidate(path: Path) -> bool:
        return (path.is_file() and not path.name.startswith(".")
                and not path.name.lower().endswith(PARTIAL_SUFFIXES))

    def _settled(self, path: Path) -> bool:
        try:
            status = path.stat()
        except FileNotFoundError:
            return False
        signature = (status.st_size, status.st_mtime_ns)
        now = time.monotonic()
        previous = self._seen.get(path)
        if previous is None or previous[0] != signature:
            self._seen[path] = (signature, now)
            return self.settle_seconds <= 0
        return now - previous[1] >= self.settle_seconds

    def _process(self, path: Path) -> bool:
        """Store the messages of one file and move it. Return False when the file stays for a later scan."""
        try:
            text, charset = decode_frame(path.read_bytes())
        except OSError as error:
            log.error("drop folder file %s unreadable, left in place: %s", path.name, error.strerror or error)
            return False
        messages = split_messages(text)
        problems = [] if messages else [t("problem.v2_empty")]
        outcome = DropCounts()
        for index, (line, message) in enumerate(messages, start=1):
            checked = check_message(message, charset, self.message_types)
            if checked.rejection is not None:
                outcome.rejected += 1
                location = checked.rejection.location or "-"
                problems.append(t("drop.problem", index=index, line=line, location=location,
                                  reason=checked.rejection.reason))
                continue
            if self.in_cohort is not None and not any(self.in_cohort(record) for record in checked.records):
                outcome.outside_cohort += 1
                continue
            try:
                _, duplicate = self.store.accept(checked.message)
            except (sqlite3.Error, ValueError) as error:
                log.error("message %d of drop folder file %s could not be stored, file left in place: %s: %s",
                          index, path.name, type(error).__name__, error)
                return False
            if duplicate:
                outcome.duplicates += 1
            else:
                outcome.stored += 1

        target = self._move(path, self.failed_folder if problems else self.done_folder)
        if problems:
            error_file = target.with_name(target.name + ".errors.txt")
            error_file.write_text("\n".join(problems) + "\n", encoding="utf-8")
            self.counts.files_failed += 1
        else:
            self.counts.files_done += 1
        for name in ("stored", "duplicates", "rejected", "outside_cohort"):
            setattr(self.counts, name, getattr(self.counts, name) + getattr(outcome, name))
        log_level = logging.WARNING if problems else logging.INFO
        log.log(log_level, "drop folder file %s (%d message(s)): %d stored, %d duplicate(s), %d rejected,"
                " %d outside the cohort, moved to %s", path.name, len(messages), outcome.stored,
                outcome.duplicates, outcome.rejected, outcome.outside_cohort, target.parent.name)
        return True

    def _move(self, path: Path, folder: Path) -> Path:
        """Move `path` into `folder`, adding a UTC time stamp when the name is taken, and sync the folders."""
        target = folder / path.name
        if target.exists():
            stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
            target = folder / f"{path.stem}.{stamp}{path.suffix}"
        os.replace(path, target)
        for changed in (folder, self.folder):
            _sync_folder(changed)
        return target


def _sync_folder(folder: Path) -> None:
    """Flush a folder's entries to disk, so that a rename survives a power cut."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
