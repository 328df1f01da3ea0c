"""Asynchronous loading of the HL7 v2 messages that the MLLP listener stored.

The worker maps each pending message and loads it with the same
per-record transaction as `ingest`. A message that cannot be mapped, or
that the FHIR server rejects, moves to the error status with a reason that
quotes no field value. When the server is unreachable the message stays
pending and the worker tries again later, with a capped exponential delay.

NOTE: messages are processed in arrival order over the whole store, one at
a time, and a pass stops at the first unreachable-server failure. That
keeps the order per patient, but one message in error does not hold back
that patient's later messages.
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
from .hl7v2 import MessageError, message_record
from .store import MessageStore, StoredMessage

log = logging.getLogger(__name__)

ORIGIN = "mllp"
# Pending messages taken per pass by run_worker, so that a stop request waits for at most one batch.
BATCH_SIZE = 100


@dataclass
class WorkerCounts:
    """Outcome of one pass over the pending messages."""

    done: int = 0
    errors: int = 0
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
    """Map and load pending messages in arrival order, and record each outcome in the store.

    The pass stops at the first ServerError (server unreachable or
    overloaded): that message stays pending with one more attempt counted,
    and `server_unreachable` is set so that the caller retries later.
    """
    counts = WorkerCounts()
    for message in store.pending(limit=max_messages):
        try:
            reason, location = _map_and_load(message, engine, server)
        except ServerError as error:
            _count_attempt_keep_pending(store, message, str(error))
            log.warning("FHIR server unreachable while loading stored message %d (MSH-10 %s): %s",
                        message.id, message.control_id, error)
            counts.server_unreachable = True
            counts.server_error = str(error)
            return counts
        if reason is None:
            store.mark_done(message.id)
            counts.done += 1
            continue
        store.mark_error(message.id, reason, location)
        counts.errors += 1
        log.error("stored message %d (MSH-10 %s) set aside, run `sonco-fhir errors show %d` for the reason",
                  message.id, message.control_id, message.id)
    return counts


def _map_and_load(message: StoredMessage, engine: MappingEngine, server: FhirServer) -> tuple[str | None, str]:
    """Map and load one message, returning (None, "") on success, else a (reason, location) pair without field values."""
    position = t("position.stored_message", id=message.id)
    try:
        record = message_record(ORIGIN, 1, message.message, message.id)
    except (ValueError, IndexError, KeyError) as error:
        # Only our own messages are kept: a library's may quote the segment text.
        detail = str(error) if isinstance(error, MessageError) else type(error).__name__
        return t("problem.v2_unparseable", reason=detail), position
    record.position = position

    mapped = engine.map_record(record)
    if mapped.problems:
        return _joined([problem.message for problem in mapped.problems]), _joined(
            [problem.location for problem in mapped.problems])

    summary = RunSummary(records_read=1, records_parsed=1, records_mapped=1)
    load_records([mapped], server, summary)
    if summary.records_loaded == 1:
        return None, ""
    # NOTE: this reason contains the server's OperationOutcome text, which HAPI writes and which
    # may name an element of the rejected resource.
    return _joined([problem.message for problem in summary.problems]), _joined(
        [problem.location for problem in summary.problems])


def _joined(texts: list[str]) -> str:
    return "; ".join(dict.fromkeys(text for text in texts if text))


def _count_attempt_keep_pending(store: MessageStore, message: StoredMessage, reason: str) -> None:
    # NOTE: MessageStore has no single statement that counts an attempt and keeps the message
    # pending, so two commits do it. A crash between them leaves the message in error status,
    # from where `sonco-fhir errors replay` puts it back.
    store.mark_error(message.id, reason, "")
    store.reset_for_replay(message.id)


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
