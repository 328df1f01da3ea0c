"""Asynchronous loading of the HL7 v2 messages that the MLLP listener stored.

The worker maps each pending message and loads it with the same
per-record transaction as `ingest`. A message that cannot be mapped, or
that the FHIR server rejects, moves to the error status with a reason that
quotes no field value. When the server is unreachable the message stays
pending and the worker tries again later, with a capped exponential delay.

Messages are loaded in arrival order per patient (see `patient_key`): a
message waits while an earlier message of the same patient is in error,
until `sonco-fhir errors replay` puts that one back in the queue. Messages
of other patients go on. An unreachable server stops the whole pass,
because it fails every patient alike.

NOTE: a merge (ADT^A40) is ordered with its surviving patient only, so it
does not wait for an earlier message in error about the merged patient.
"""

import logging
import queue
import sqlite3
import threading
from dataclasses import dataclass

from ..config import load_settings
from ..errors import ConfigurationError, ServerError, SoncoError
from ..i18n import t
from ..loading.hapi import TIMEOUT_SECONDS, FhirServer
from ..mapping.engine import MappingEngine
from ..pipeline import RunSummary, build_engine, load_records
from .hl7v2 import MessageError, message_records
from .store import MessageStore, StoredMessage, patient_key

log = logging.getLogger(__name__)

ORIGIN = "mllp"
# Pending messages taken per pass by run_worker, so that a stop request waits for at most one batch.
BATCH_SIZE = 100


@dataclass
class WorkerCounts:
    """Outcome of one pass over the pending messages."""

    done: int = 0
    errors: int = 0
    # Messages skipped because an earlier message of the same patient is in error.
    held: int = 0
    server_unreachable: bool = False
    server_error: str = ""

    @property
    def processed(self) -> int:
        return self.done + self.errors


@dataclass(frozen=True)
class Backoff:
    """Delays of run_worker, in seconds."""

    initial: float = 1.0
    maximum: float = 60.0
    poll_interval: float = 1.0


def process_pending(store: MessageStore, engine: MappingEngine, server: FhirServer,
                    max_messages: int | None = None) -> WorkerCounts:
    """Map and load pending messages in arrival order per patient, and record each outcome in the store.

    At most `max_messages` messages are processed (None: all), while held
    messages are skipped without counting. The pass stops at the first
    ServerError (server unreachable or overloaded): that message stays
    pending with one more attempt counted, and `server_unreachable` is set
    so that the caller retries later.
    """
    counts = WorkerCounts()
    blocking = _blocking_errors(store)
    last_id = 0
    while max_messages is None or counts.processed < max_messages:
        page = store.pending(limit=BATCH_SIZE, after_id=last_id)
        if not page:
            break
        for message in page:
            last_id = message.id
            if max_messages is not None and counts.processed >= max_messages:
                break
            key = patient_key(message.message)
            if key is not None and blocking.get(key, message.id) < message.id:
                counts.held += 1
                log.debug("stored message %d (MSH-10 %s) waits for message %d of the same patient, in error",
                         message.id, message.control_id, blocking[key])
                continue
            outcome = _process_one(store, engine, server, message, counts)
            if outcome == "unreachable":
                return counts
            if outcome == "error" and key is not None:
                blocking.setdefault(key, message.id)
    return counts


def count_held(store: MessageStore) -> int:
    """Count the pending messages that wait behind an earlier message in error of the same patient."""
    blocking = _blocking_errors(store)
    if not blocking:
        return 0
    held = 0
    for message in store.pending():
        key = patient_key(message.message)
        if key is not None and blocking.get(key, message.id) < message.id:
            held += 1
    return held


def _blocking_errors(store: MessageStore) -> dict[str, int]:
    """Return, per patient key, the id of that patient's oldest message in error."""
    blocking: dict[str, int] = {}
    for message in store.errors():
        key = patient_key(message.message)
        if key is not None:
            blocking.setdefault(key, message.id)
    return blocking


def _process_one(store: MessageStore, engine: MappingEngine, server: FhirServer, message: StoredMessage,
                 counts: WorkerCounts) -> str:
    """Process one message, update `counts` and return the outcome: "done", "error" or "unreachable"."""
    try:
        reason, location = _map_and_load(message, engine, server)
    except ServerError as error:
        store.record_retry(message.id, str(error))
        log.warning("FHIR server unreachable while loading stored message %d (MSH-10 %s): %s",
                    message.id, message.control_id, error)
        counts.server_unreachable = True
        counts.server_error = str(error)
        return "unreachable"
    if reason is None:
        store.mark_done(message.id)
        counts.done += 1
        return "done"
    store.mark_error(message.id, reason, location)
    counts.errors += 1
    log.error("stored message %d (MSH-10 %s) set aside, run `sonco-fhir errors show %d` for the reason",
              message.id, message.control_id, message.id)
    return "error"


def _map_and_load(message: StoredMessage, engine: MappingEngine, server: FhirServer) -> tuple[str | None, str]:
    """Map and load one message, returning (None, "") on success, else a (reason, location) pair without field values.

    An ADT^A40 with several PID/MRG pairs gives one record per pair, and the
    message succeeds only when every record is loaded.
    """
    position = t("position.stored_message", id=message.id)
    try:
        records = message_records(ORIGIN, 1, message.message, message.id)
    except (ValueError, IndexError, KeyError) as error:
        # Only our own messages are kept: a library's may quote the segment text.
        detail = str(error) if isinstance(error, MessageError) else type(error).__name__
        return t("problem.v2_unparseable", reason=detail), position

    mapped_records = []
    for record in records:
        if len(records) == 1:
            record.position = position
        mapped = engine.map_record(record)
        if mapped.problems:
            return _joined([problem.message for problem in mapped.problems]), _joined(
                [problem.location for problem in mapped.problems])
        mapped_records.append(mapped)

    summary = RunSummary(records_read=len(records), records_parsed=len(records), records_mapped=len(records))
    load_records(mapped_records, server, summary)
    if summary.records_loaded == len(records):
        return None, ""
    # NOTE: this reason contains the server's OperationOutcome text, which HAPI writes and which
    # may name an element of the rejected resource.
    return _joined([problem.message for problem in summary.problems]), _joined(
        [problem.location for problem in summary.problems])


def _joined(texts: list[str]) -> str:
    return "; ".join(dict.fromkeys(text for text in texts if text))


def run_worker(store: MessageStore, engine: MappingEngine, server: FhirServer, stop_event: threading.Event,
               backoff: Backoff = Backoff()) -> None:
    """Process pending messages until `stop_event` is set.

    While the FHIR server is unreachable the delay between passes doubles
    from `backoff.initial` up to `backoff.maximum`. Otherwise the worker
    polls the store every `backoff.poll_interval` seconds.
    """
    log.info("HL7 v2 loading worker started, FHIR server %s", server.base_url)
    delay = backoff.initial
    retries = 0
    held_count = 0
    while not stop_event.is_set():
        try:
            counts = process_pending(store, engine, server, max_messages=BATCH_SIZE)
        except SoncoError as error:
            # A configuration error (unreadable mapping folder, for example) fails every message
            # alike, so the worker waits and retries instead of setting each message aside.
            counts = WorkerCounts(server_unreachable=True, server_error=str(error))
            log.error("HL7 v2 loading failed: %s", error)

        if counts.server_unreachable:
            retries += 1
            log.warning("retry %d of the pending HL7 v2 messages in %.1f s", retries, delay)
            stop_event.wait(delay)
            delay = min(delay * 2, backoff.maximum)
            continue

        if counts.held != held_count:
            held_count = counts.held
            log.warning("%d stored HL7 v2 message(s) wait behind an earlier message in error of the same patient."
                        " See `sonco-fhir errors list`.", held_count)
        if retries:
            log.info("FHIR server reachable again after %d retries", retries)
        delay, retries = backoff.initial, 0
        if counts.processed:
            log.info("loaded %d stored HL7 v2 message(s), %d set aside", counts.done, counts.errors)
        if counts.processed < BATCH_SIZE:
            stop_event.wait(backoff.poll_interval)
    log.info("HL7 v2 loading worker stopped")


class LoadingThread:
    """run_worker in a background thread, with the engine and server that load_settings() describes.

    The engine is built inside the thread because its identity crosswalk
    contains an SQLite connection, which may serve only the thread that opened it.
    """

    def __init__(self, store: MessageStore, backoff: Backoff = Backoff()):
        self.store = store
        self.backoff = backoff
        self.stop_event = threading.Event()
        self._startup: queue.Queue = queue.Queue(maxsize=1)
        self._thread = threading.Thread(target=self._run, name="sonco-loading-worker", daemon=True)

    def start(self, timeout: float = 60.0) -> None:
        """Start the thread and wait until its engine is built, or raise ConfigurationError when that fails."""
        self._thread.start()
        try:
            error = self._startup.get(timeout=timeout)
        except queue.Empty:
            self.stop_event.set()
            raise ConfigurationError(t("listen.worker_failed", reason=f"no engine after {timeout} s")) from None
        if error is not None:
            self._thread.join(timeout=timeout)
            raise ConfigurationError(t("listen.worker_failed", reason=error))

    def stop(self) -> None:
        """Ask the worker to stop and wait for the message in progress, at most one HTTP timeout more."""
        self.stop_event.set()
        if self._thread.is_alive():
            self._thread.join(timeout=TIMEOUT_SECONDS + 10)

    def _run(self) -> None:
        try:
            settings = load_settings()
            engine = build_engine(settings, read_only=False)
            server = FhirServer(settings.fhir_url)
        except (SoncoError, OSError, sqlite3.Error) as error:
            self._startup.put(error)
            return
        self._startup.put(None)
        try:
            run_worker(self.store, engine, server, self.stop_event, self.backoff)
        finally:
            engine.crosswalk.close()
