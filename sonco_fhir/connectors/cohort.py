"""Cohort filter of the HL7 v2 listeners: which patients' messages are kept.

The cohort is a text file of patient identifiers, one per line, as they
appear in PID-3. `VALUE` matches CX-1 under any assigning authority.
`VALUE^AUTHORITY` matches CX-1 under the assigning authority whose
namespace (CX-4.1) or universal id (CX-4.2, an OID) is AUTHORITY. Blank
lines and lines starting with # are ignored. A message is in the cohort
when one of its PID-3 repetitions matches. A message without any PID-3
value is kept, because nothing shows that its patient is outside the cohort.

The file is read again when its modification time changes, so patients
can be enrolled without restarting the listener.
"""

import logging
import os
from pathlib import Path

from .base import SourceRecord

log = logging.getLogger(__name__)


class CohortFile:
    """The identifiers of a cohort file, re-read when the file changes."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._modified: int | None = None
        self._unreadable = False
        self._any_authority: set[str] = set()
        self._with_authority: set[tuple[str, str]] = set()
        self._load()

    def __len__(self) -> int:
        return len(self._any_authority) + len(self._with_authority)

    def __call__(self, record: SourceRecord) -> bool:
        """Tell whether the parsed message `record` is about a patient of the cohort (or about no patient)."""
        self._reload_if_changed()
        identifiers = record.data.get("PID", {}).get("3[]", [])
        values = [identifier for identifier in identifiers if identifier.get("1")]
        if not values:
            return True
        for identifier in values:
            value = identifier["1"]
            if value in self._any_authority:
                return True
            for authority in (identifier.get("4.1"), identifier.get("4.2")):
                if authority and (value, authority) in self._with_authority:
                    return True
        return False

    def _reload_if_changed(self) -> None:
        try:
            modified = os.stat(self.path).st_mtime_ns
        except OSError as error:
            # Keep the identifiers already read, because a file being replaced must not empty the cohort.
            # One log line per unreadable period, not one per message.
            if not self._unreadable:
                log.error("cohort file %s unreadable, keeping the %d identifiers read before: %s",
                          self.path, len(self), error.strerror or error)
            self._unreadable = True
            return
        self._unreadable = False
        if modified != self._modified:
            try:
                self._load()
            except (OSError, UnicodeDecodeError) as error:
                log.error("cohort file %s could not be read again, keeping the %d identifiers read before: %s",
                          self.path, len(self), error)
                # Not retried until the file changes again.
                self._modified = modified

    def _load(self) -> None:
        """Read the file. Raise OSError when it is unreadable and UnicodeDecodeError when it is not UTF-8."""
        modified = os.stat(self.path).st_mtime_ns
        any_authority: set[str] = set()
        with_authority: set[tuple[str, str]] = set()
        for line in self.path.read_text(encoding="utf-8-sig").splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            value, _, authority = line.partition("^")
            if authority:
                with_authority.add((value, authority))
            else:
                any_authority.add(value)
        self._any_authority, self._with_authority = any_authority, with_authority
        self._modified = modified
        log.info("cohort file %s read: %d identifier(s)", self.path, len(self))
