"""Durable store of received HL7 v2 messages, in SQLite.

The MLLP listener sends its acknowledgement only after `accept` has
committed the message, so a message that got AA survives a crash or a
power cut. The database runs in WAL mode with `synchronous=FULL`, which
makes each commit wait for the WAL file to reach the disk.

A message is identified by its sending application (MSH-3), sending
facility (MSH-4) and control id (MSH-10), compared as raw field text. A
sender that re-sends a message after a lost ACK therefore does not
create a second row.
"""

import sqlite3
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

STORE_FILE_NAME = "hl7v2-store.sqlite"
STATUSES = ("pending", "done", "error")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at TEXT NOT NULL,
    sending_application TEXT NOT NULL,
    sending_facility TEXT NOT NULL,
    control_id TEXT NOT NULL,
    message TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'done', 'error')),
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    error_location TEXT,
    UNIQUE (sending_application, sending_facility, control_id)
);
CREATE INDEX IF NOT EXISTS messages_status ON messages (status, id);
CREATE TABLE IF NOT EXISTS rejections (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at TEXT NOT NULL,
    peer TEXT NOT NULL,
    sending_application TEXT NOT NULL,
    sending_facility TEXT NOT NULL,
    control_id TEXT NOT NULL,
    reason TEXT NOT NULL,
    location TEXT,
    error_code TEXT NOT NULL,
    size INTEGER NOT NULL,
    message TEXT NOT NULL
);
"""
# Characters of a rejected frame kept in the rejections table, enough to read its header and first segments.
REJECTED_TEXT_CHARS = 64 * 1024


@dataclass(frozen=True)
class MessageHeader:
    """Raw MSH fields, as written in the message (escape sequences kept)."""

    field_separator: str
    encoding_characters: str
    fields: tuple[str, ...]

    def field(self, number: int) -> str:
        """Return MSH-`number` as raw text, or "" when the message stops before it."""
        if number == 1:
            return self.field_separator
        index = number - 1
        return self.fields[index] if index < len(self.fields) else ""

    @property
    def sending_application(self) -> str:
        return self.field(3)

    @property
    def sending_facility(self) -> str:
        return self.field(4)

    @property
    def control_id(self) -> str:
        return self.field(10)


def read_header(text: str) -> MessageHeader | None:
    """Read the MSH segment that starts `text`, or return None when there is none.

    The separators come from MSH-1 and MSH-2. They must be punctuation and
    distinct, as HL7 v2 requires, because an ACK built with letters or a
    line break as separators would be unreadable for the sender.
    """
    text = text.lstrip("\ufeff")
    if not text.startswith("MSH") or len(text) < 8:
        return None
    segment = text.replace("\r\n", "\r").replace("\n", "\r").split("\r", 1)[0]
    if len(segment) < 8:
        return None
    separator = segment[3]
    fields = tuple(segment.split(separator))
    encoding = fields[1] if len(fields) > 1 else ""
    characters = separator + encoding
    if not 4 <= len(encoding) <= 5 or len(set(characters)) != len(characters):
        return None
    if any(char.isalnum() or char.isspace() for char in characters):
        return None
    return MessageHeader(separator, encoding, fields)


@dataclass(frozen=True)
class StoredMessage:
    """One row of the store."""

    id: int
    received_at: str
    sending_application: str
    sending_facility: str
    control_id: str
    message: str
    status: str
    attempts: int
    last_error: str | None
    error_location: str | None


@dataclass(frozen=True)
class RejectedFrame:
    """One frame rejected at reception (AR), kept so that `sonco-fhir errors` can show it.

    Rejected frames are kept apart from the messages, without the
    de-duplication key, so that a corrected message re-sent with the same
    MSH-10 is stored normally.
    """

    id: int
    received_at: str
    peer: str
    sending_application: str
    sending_facility: str
    control_id: str
    reason: str
    location: str | None
    error_code: str
    size: int
    message: str


class MessageStore:
    """Durable message store, safe to share between threads.

    One connection serves every thread, behind a lock. SQLite serialises
    writers anyway, and the lock keeps a commit from interleaving with
    another thread's statements on the same connection.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        # isolation_level=None: autocommit, so each statement is committed when execute returns.
        # timeout: how long to wait, in seconds, while another process holds the write lock.
        self._connection = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        self._connection.row_factory = sqlite3.Row
        mode = self._connection.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode.lower() != "wal":
            raise sqlite3.OperationalError(f"cannot switch {self.path} to WAL mode (journal mode is {mode})")
        self._connection.execute("PRAGMA synchronous=FULL")
        self._connection.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._connection.close()

    def __enter__(self) -> "MessageStore":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def accept(self, text: str) -> tuple[int | None, bool]:
        """Store and commit a message, returning (new row id, False), or (None, True) for a duplicate.

        Raises ValueError when the text has no valid MSH segment or no
        MSH-10, and sqlite3.Error when the commit fails.
        """
        header = read_header(text)
        if header is None:
            raise ValueError("the message does not start with a valid MSH segment")
        if not header.control_id:
            raise ValueError("MSH-10 (message control id) is missing")
        received_at = datetime.now(timezone.utc).isoformat(timespec="microseconds")
        with self._lock:
            cursor = self._connection.execute(
                "INSERT INTO messages (received_at, sending_application, sending_facility, control_id, message)"
                " VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (sending_application, sending_facility, control_id) DO NOTHING",
                (received_at, header.sending_application, header.sending_facility, header.control_id, text),
            )
        # In autocommit mode the INSERT is committed, and synced, when execute returns.
        if cursor.rowcount == 0:
            return None, True
        return cursor.lastrowid, False

    def record_rejection(self, text: str, size: int, peer: str, reason: str, location: str, error_code: str) -> int:
        """Keep a rejected frame (its first REJECTED_TEXT_CHARS characters) with the reason of its AR; return its id."""
        header = read_header(text)
        received_at = datetime.now(timezone.utc).isoformat(timespec="microseconds")
        with self._lock:
            cursor = self._connection.execute(
                "INSERT INTO rejections (received_at, peer, sending_application, sending_facility, control_id,"
                " reason, location, error_code, size, message) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (received_at, peer, header.sending_application if header else "",
                 header.sending_facility if header else "", header.control_id if header else "",
                 reason, location or None, error_code, size, text[:REJECTED_TEXT_CHARS]),
            )
        return cursor.lastrowid

    def rejections(self, limit: int | None = None) -> list[RejectedFrame]:
        """Return the frames rejected at reception, oldest first."""
        query, parameters = "SELECT * FROM rejections ORDER BY id", ()
        if limit is not None:
            query, parameters = query + " LIMIT ?", (limit,)
        with self._lock:
            rows = self._connection.execute(query, parameters).fetchall()
        return [RejectedFrame(**dict(row)) for row in rows]

    def get_rejection(self, rejection_id: int) -> RejectedFrame:
        with self._lock:
            row = self._connection.execute("SELECT * FROM rejections WHERE id = ?", (rejection_id,)).fetchone()
        if row is None:
            raise KeyError(f"no rejected HL7 v2 frame with id {rejection_id}")
        return RejectedFrame(**dict(row))

    def delete_rejection(self, rejection_id: int) -> None:
        with self._lock:
            cursor = self._connection.execute("DELETE FROM rejections WHERE id = ?", (rejection_id,))
        if cursor.rowcount == 0:
            raise KeyError(f"no rejected HL7 v2 frame with id {rejection_id}")

    def pending(self, limit: int | None = None, after_id: int = 0) -> list[StoredMessage]:
        """Return messages waiting to be mapped, oldest first, from the row after `after_id` on."""
        return self._select("pending", limit, after_id)

    def errors(self, limit: int | None = None) -> list[StoredMessage]:
        """Return messages whose last processing failed, oldest first."""
        return self._select("error", limit)

    def get(self, message_id: int) -> StoredMessage:
        with self._lock:
            row = self._connection.execute("SELECT * FROM messages WHERE id = ?", (message_id,)).fetchone()
        if row is None:
            raise KeyError(f"no stored HL7 v2 message with id {message_id}")
        return StoredMessage(**dict(row))

    def count(self, status: str | None = None) -> int:
        query, parameters = "SELECT COUNT(*) FROM messages", ()
        if status is not None:
            query, parameters = query + " WHERE status = ?", (self._checked(status),)
        with self._lock:
            return self._connection.execute(query, parameters).fetchone()[0]

    def mark_done(self, message_id: int) -> None:
        """Record a successful processing attempt."""
        self._update(
            message_id,
            "UPDATE messages SET status = 'done', attempts = attempts + 1, last_error = NULL, error_location = NULL"
            " WHERE id = ?",
            (message_id,),
        )

    def mark_error(self, message_id: int, reason: str, location: str = "") -> None:
        """Record a failed processing attempt.

        `reason` and `location` end up in logs and on screen, so they must
        not quote patient values (the Problem convention in errors.py).
        """
        self._update(
            message_id,
            "UPDATE messages SET status = 'error', attempts = attempts + 1, last_error = ?, error_location = ?"
            " WHERE id = ?",
            (reason, location or None, message_id),
        )

    def record_retry(self, message_id: int, reason: str) -> None:
        """Count a failed attempt that will be retried: the message stays pending, with `reason` kept.

        One statement does both, so a crash cannot leave the message half-updated.
        """
        self._update(
            message_id,
            "UPDATE messages SET status = 'pending', attempts = attempts + 1, last_error = ?, error_location = NULL"
            " WHERE id = ?",
            (reason, message_id),
        )

    def reset_for_replay(self, message_id: int) -> None:
        """Put a message back in the pending queue; the attempt count and last error are kept."""
        self._update(message_id, "UPDATE messages SET status = 'pending' WHERE id = ?", (message_id,))

    def _select(self, status: str, limit: int | None, after_id: int = 0) -> list[StoredMessage]:
        query = "SELECT * FROM messages WHERE status = ? AND id > ? ORDER BY id"
        parameters: tuple = (status, after_id)
        if limit is not None:
            query += " LIMIT ?"
            parameters += (limit,)
        with self._lock:
            rows = self._connection.execute(query, parameters).fetchall()
        return [StoredMessage(**dict(row)) for row in rows]

    def _update(self, message_id: int, statement: str, parameters: tuple) -> None:
        with self._lock:
            cursor = self._connection.execute(statement, parameters)
        if cursor.rowcount == 0:
            raise KeyError(f"no stored HL7 v2 message with id {message_id}")

    @staticmethod
    def _checked(status: str) -> str:
        if status not in STATUSES:
            raise ValueError(f"invalid message status {status!r} (expected one of {', '.join(STATUSES)})")
        return status


def patient_key(text: str) -> str | None:
    """Return the key that orders a message among its patient's messages, or None when it names no patient.

    The key is the PID-3 repetition of type PI (the IPP), else the first
    non-empty one, as "value^namespace^OID" of CX-1 and CX-4. It is compared
    in memory only and is never logged, because it is an identifier.
    """
    header = read_header(text)
    if header is None:
        return None
    separator = header.field_separator
    component, repetition = header.encoding_characters[0], header.encoding_characters[1]
    subcomponent = header.encoding_characters[3]
    segments = text.replace("\r\n", "\r").replace("\n", "\r").split("\r")
    pid = next((segment for segment in segments if segment.startswith("PID" + separator)), None)
    if pid is None:
        return None
    fields = pid.split(separator)
    if len(fields) <= 3:
        return None
    identifiers = [value.split(component) for value in fields[3].split(repetition)]
    identifiers = [parts for parts in identifiers if parts[0]]
    if not identifiers:
        return None
    chosen = next((parts for parts in identifiers if len(parts) > 4 and parts[4] == "PI"), identifiers[0])
    authority = chosen[3].split(subcomponent) if len(chosen) > 3 else []
    return "^".join([chosen[0], *authority[:2]])


def store_path(data_dir: Path) -> Path:
    return Path(data_dir) / STORE_FILE_NAME
