"""MLLP listener for HL7 v2 feeds, on asyncio.

Each frame (start block 0x0B, message, end block 0x1C 0x0D) is checked,
committed to the message store, and only then acknowledged: AA when stored
(or already stored), AR when the frame is not a message this adapter
accepts (unparseable, MSH-10 missing, version or message type not
supported), AE when the store fails. A message whose MSH-15 or MSH-16 is
valued gets an enhanced-mode accept acknowledgement instead (CA, CR, CE),
sent or not as MSH-15 requests. Mapping and loading into FHIR happen later,
from the store, so no application acknowledgement is sent (see
docs/connectors-hl7v2.md).

Logs name the peer, MSH-3, MSH-4, MSH-10 and sizes, never other field
values, because every other segment may carry patient data.
"""

import asyncio
import logging
import secrets
import sqlite3
import ssl
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from ..i18n import t
from .base import SourceRecord
from .hl7v2 import VERSIONS, MessageError, charset_codec, message_records, split_messages
from .store import MessageHeader, MessageStore, read_header

log = logging.getLogger(__name__)

START_BLOCK = b"\x0b"
END_BLOCK = b"\x1c\x0d"
DEFAULT_MAX_FRAME_BYTES = 16 * 1024 * 1024
# Seconds of silence allowed while a frame is incomplete; the connection is closed after that.
DEFAULT_READ_TIMEOUT = 30.0
# Seconds allowed for one whole frame, however steadily its bytes arrive, against slow senders
# that would otherwise hold a connection forever by sending one byte at a time.
DEFAULT_FRAME_TIMEOUT = 300.0
# Maximum number of open connections. A connection beyond it is closed at once, with a warning.
DEFAULT_MAX_CONNECTIONS = 64
READ_CHUNK_BYTES = 64 * 1024
# Bytes kept from the start of an oversize frame, to read its MSH for the AR.
OVERSIZE_HEAD_BYTES = 8 * 1024

DEFAULT_SEPARATOR = "|"
DEFAULT_ENCODING_CHARACTERS = "^~\\&"
# Used in an ACK when the received frame has no readable MSH-12.
DEFAULT_VERSION = "2.5"
# HL7 table 0155, accept and application acknowledgement conditions (MSH-15, MSH-16).
ACK_CONDITIONS = ("AL", "NE", "ER", "SU")
# Original-mode code (HL7 table 0008) -> enhanced-mode accept acknowledgement code.
_ENHANCED_CODES = {"AA": "CA", "AE": "CE", "AR": "CR"}

# HL7 table 0357 (message error condition codes), for ERR-3.
SEGMENT_SEQUENCE_ERROR = "100"
REQUIRED_FIELD_MISSING = "101"
DATA_TYPE_ERROR = "102"
TABLE_VALUE_NOT_FOUND = "103"
UNSUPPORTED_MESSAGE_TYPE = "200"
UNSUPPORTED_EVENT_CODE = "201"
UNSUPPORTED_VERSION_ID = "203"
APPLICATION_INTERNAL_ERROR = "207"
_ERROR_NAMES = {
    SEGMENT_SEQUENCE_ERROR: "Segment sequence error",
    REQUIRED_FIELD_MISSING: "Required field missing",
    DATA_TYPE_ERROR: "Data type error",
    TABLE_VALUE_NOT_FOUND: "Table value not found",
    UNSUPPORTED_MESSAGE_TYPE: "Unsupported message type",
    UNSUPPORTED_EVENT_CODE: "Unsupported event code",
    UNSUPPORTED_VERSION_ID: "Unsupported version id",
    APPLICATION_INTERNAL_ERROR: "Application internal error",
}


# --- Framing ---------------------------------------------------------------


@dataclass(frozen=True)
class Frame:
    content: bytes


@dataclass(frozen=True)
class OversizeFrame:
    """A frame longer than the maximum: only its first bytes are kept."""

    head: bytes
    size: int


class FrameDecoder:
    """Incremental MLLP frame decoder: bytes in, complete frames out.

    Bytes outside a frame are counted in `discarded_bytes` and dropped.
    A frame that grows past `max_frame_bytes` is not buffered further:
    its bytes are counted until the end block, and it comes out as an
    `OversizeFrame`.
    """

    def __init__(self, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES):
        self.max_frame_bytes = max_frame_bytes
        self.discarded_bytes = 0
        self._in_frame = False
        self._oversize = False
        self._buffer = bytearray()
        self._scan_from = 0
        self._head = b""
        self._dropped = 0

    @property
    def in_frame(self) -> bool:
        return self._in_frame

    @property
    def pending_bytes(self) -> int:
        """Size of the incomplete frame, if any."""
        return self._dropped + len(self._buffer) if self._in_frame else 0

    def feed(self, data: bytes) -> list[Frame | OversizeFrame]:
        frames: list[Frame | OversizeFrame] = []
        pending = bytes(data)
        while pending:
            if not self._in_frame:
                pending = self._seek_start(pending)
            elif self._oversize:
                pending = self._skip_oversize(pending, frames)
            else:
                pending = self._collect(pending, frames)
        return frames

    def _seek_start(self, data: bytes) -> bytes:
        start = data.find(START_BLOCK)
        if start < 0:
            self.discarded_bytes += len(data)
            return b""
        self.discarded_bytes += start
        self._in_frame = True
        self._oversize = False
        self._buffer = bytearray()
        self._scan_from = 0
        self._dropped = 0
        return data[start + 1:]

    def _collect(self, data: bytes, frames: list) -> bytes:
        self._buffer.extend(data)
        end = self._buffer.find(END_BLOCK, self._scan_from)
        if end >= 0:
            content = bytes(self._buffer[:end])
            rest = bytes(self._buffer[end + len(END_BLOCK):])
            self._in_frame = False
            self._buffer = bytearray()
            if len(content) > self.max_frame_bytes:
                frames.append(OversizeFrame(content[:OVERSIZE_HEAD_BYTES], len(content)))
            else:
                frames.append(Frame(content))
            return rest
        # The last byte may be the first half of an end block split across reads.
        self._scan_from = max(len(self._buffer) - 1, 0)
        if len(self._buffer) > self.max_frame_bytes + 1:
            self._oversize = True
            self._head = bytes(self._buffer[:OVERSIZE_HEAD_BYTES])
            self._dropped = len(self._buffer) - 1
            self._buffer = bytearray(self._buffer[-1:])
        return b""

    def _skip_oversize(self, data: bytes, frames: list) -> bytes:
        combined = bytes(self._buffer) + data
        end = combined.find(END_BLOCK)
        if end >= 0:
            frames.append(OversizeFrame(self._head, self._dropped + end))
            self._in_frame = False
            self._oversize = False
            self._buffer = bytearray()
            self._head = b""
            self._dropped = 0
            return combined[end + len(END_BLOCK):]
        self._dropped += len(combined) - 1
        self._buffer = bytearray(combined[-1:])
        return b""


def frame(content: bytes) -> bytes:
    return START_BLOCK + content + END_BLOCK


# --- Checking and acknowledging ---------------------------------------------


@dataclass(frozen=True)
class Rejection:
    """Why a frame gets AR or AE: ERR-2 location, ERR-3 code and a reason that quotes no field value."""

    reason: str
    location: str = ""
    error_code: str = DATA_TYPE_ERROR


@dataclass
class CheckedFrame:
    text: str
    charset: str
    header: MessageHeader | None
    message: str = ""
    # One record per message, except an ADT^A40 with several PID/MRG pairs: one per pair.
    records: list[SourceRecord] = field(default_factory=list)
    rejection: Rejection | None = None


class MessageTypes:
    """The message types and trigger events that the HL7 v2 mapping files apply to.

    The listener rejects other messages with AR at once, so that the sender
    learns it, instead of storing them for an error queue entry later.
    """

    def __init__(self, mappings: list):
        self.mappings = mappings

    @classmethod
    def from_folder(cls, folder: Path) -> "MessageTypes":
        """Read the `applies_to` of every mapping file in `folder` (mappings/hl7v2); raise ConfigurationError when one is invalid."""
        from ..mapping.engine import load_mapping_file

        return cls([load_mapping_file(path) for path in sorted(Path(folder).glob("*.yaml"))])

    def rejection(self, record: SourceRecord) -> Rejection | None:
        if any(mapping.applies(record) for mapping in self.mappings):
            return None
        message_type = record.selector.get("message_type", "")
        described = f"{message_type}^{record.selector.get('trigger_event', '')}"
        reason = t("mllp.reject.message_type", type=described)
        type_known = any(message_type in _accepted(mapping.applies_to.get("message_type"), message_type)
                         for mapping in self.mappings)
        if type_known:
            return Rejection(reason, "MSH^1^9^2", UNSUPPORTED_EVENT_CODE)
        return Rejection(reason, "MSH^1^9^1", UNSUPPORTED_MESSAGE_TYPE)


def _accepted(selector, value: str) -> list:
    """Return the values a mapping selector accepts; a missing selector accepts `value`."""
    if selector is None:
        return [value]
    return selector if isinstance(selector, list) else [selector]


def decode_frame(content: bytes) -> tuple[str, str]:
    """Decode frame bytes with the character set of MSH-18, else as UTF-8, else as Latin-1 (which decodes any byte).

    Returns the text and the codec, which the ACK uses too. An unknown or
    mismatching MSH-18 falls back the same way, and `message_records`
    reports it later as the reason of an AR.
    """
    try:
        codec = charset_codec(content[:1024].decode("latin-1"))
    except MessageError:
        codec = None
    for candidate in (codec, "utf-8"):
        if candidate is None:
            continue
        try:
            return content.decode(candidate), candidate
        except UnicodeDecodeError:
            pass
    return content.decode("latin-1"), "latin-1"


def check_frame(content: bytes, message_types: MessageTypes | None = None) -> CheckedFrame:
    """Decode and parse a frame just enough to decide between storing it and AR.

    With `message_types`, a message that no mapping file applies to is
    rejected too. Without it, every message type is accepted.
    """
    text, charset = decode_frame(content)
    return check_message(text, charset, message_types)


def check_message(text: str, charset: str = "utf-8", message_types: MessageTypes | None = None) -> CheckedFrame:
    """Check the text of one message as `check_frame` does. `charset` is the encoding its ACK will use."""
    checked = CheckedFrame(text, charset, read_header(text))
    checked.rejection = _framing_rejection(text, checked.header)
    if checked.rejection is not None:
        return checked

    checked.rejection = _header_rejection(checked.header)
    if checked.rejection is not None:
        return checked

    message = split_messages(text)[0][1]
    try:
        records = message_records("mllp", 1, message, 1)
    except (ValueError, IndexError, KeyError) as error:
        # Only our own messages are shown: a library's may quote the segment text.
        reason = str(error) if isinstance(error, MessageError) else type(error).__name__
        checked.rejection = Rejection(t("problem.v2_unparseable", reason=reason), "", DATA_TYPE_ERROR)
        return checked

    if message_types is not None:
        checked.rejection = message_types.rejection(records[0])
    if checked.rejection is None:
        checked.message = message
        checked.records = records
    return checked


def _framing_rejection(text: str, header: MessageHeader | None) -> Rejection | None:
    """Reject a frame that does not contain exactly one message with readable separators."""
    messages = split_messages(text)
    if not messages:
        return Rejection(t("mllp.reject.empty"), "MSH^1", SEGMENT_SEQUENCE_ERROR)
    if not messages[0][1].startswith("MSH"):
        return Rejection(t("problem.v2_no_msh"), "MSH^1", SEGMENT_SEQUENCE_ERROR)
    if len(messages) > 1:
        return Rejection(t("mllp.reject.several", count=len(messages)), "MSH^2", SEGMENT_SEQUENCE_ERROR)
    if header is None:
        return Rejection(t("mllp.reject.separators"), "MSH^1^2", DATA_TYPE_ERROR)
    return None


def _header_rejection(header: MessageHeader) -> Rejection | None:
    """Reject a message whose MSH-10, MSH-12, MSH-15 or MSH-16 this listener cannot honour.

    The versions are those that connectors/hl7v2.py reads (VERSIONS), checked
    here first so that the ERR segment can point at MSH-12.
    """
    component = header.encoding_characters[0]
    if not header.control_id:
        return Rejection(t("mllp.reject.no_control_id"), "MSH^1^10", REQUIRED_FIELD_MISSING)
    version = header.field(12).split(component)[0]
    if not version:
        return Rejection(t("mllp.reject.no_version"), "MSH^1^12", REQUIRED_FIELD_MISSING)
    if version not in VERSIONS:
        reason = t("hl7v2.version_unknown", version=version[:12], known=", ".join(VERSIONS))
        return Rejection(reason, "MSH^1^12", UNSUPPORTED_VERSION_ID)
    for number in (15, 16):
        condition = header.field(number)
        if condition and condition not in ACK_CONDITIONS:
            reason = t("mllp.reject.ack_condition", field=f"MSH-{number}", value=condition[:12],
                       expected=", ".join(ACK_CONDITIONS))
            return Rejection(reason, f"MSH^1^{number}", TABLE_VALUE_NOT_FOUND)
    return None


def escape(value: str, separator: str, encoding: str) -> str:
    """Escape HL7 delimiters in free text with \\F\\ \\S\\ \\R\\ \\E\\ \\T\\, using the message's own characters."""
    component, repetition, escape_char, subcomponent = encoding[:4]
    replacements = {
        escape_char: f"{escape_char}E{escape_char}",
        separator: f"{escape_char}F{escape_char}",
        component: f"{escape_char}S{escape_char}",
        repetition: f"{escape_char}R{escape_char}",
        subcomponent: f"{escape_char}T{escape_char}",
        "\r": " ",
        "\n": " ",
    }
    return "".join(replacements.get(char, char) for char in value)


def new_control_id() -> str:
    """Return a random MSH-10 of 20 characters, the maximum length in HL7 v2.5."""
    return secrets.token_hex(10).upper()


def enhanced_mode(header: MessageHeader | None) -> bool:
    """Tell whether the sender asked for enhanced acknowledgement mode: MSH-15 or MSH-16 valued."""
    return header is not None and bool(header.field(15) or header.field(16))


def acknowledgement_code(header: MessageHeader | None, code: str) -> str:
    """Turn an original-mode code (AA, AE, AR) into the accept acknowledgement code (CA, CE, CR) in enhanced mode."""
    return _ENHANCED_CODES[code] if enhanced_mode(header) else code


def ack_requested(header: MessageHeader | None, code: str) -> bool:
    """Apply MSH-15 in enhanced mode: AL (or empty) always, NE never, ER on CE or CR, SU on CA.

    Original mode always gets an ACK. An empty MSH-15 beside a valued
    MSH-16 counts as AL, because an MLLP sender usually waits for an ACK.
    """
    if not enhanced_mode(header):
        return True
    condition = header.field(15)
    if condition == "NE":
        return False
    if condition == "ER":
        return code != "AA"
    if condition == "SU":
        return code == "AA"
    return True


def build_ack(header: MessageHeader | None, code: str, rejection: Rejection | None = None) -> str:
    """Build the ACK for a message whose MSH is `header` (None when unreadable).

    `code` is the original-mode code (AA, AE, AR), sent as CA, CE or CR in
    enhanced mode. The ACK uses the message's separators, swaps sender and
    receiver, and echoes MSH-10 in MSA-2 and the version in MSH-12. A
    rejection adds an ERR segment (v2.5 layout: ERR-2 location, ERR-3
    code, ERR-4 severity, ERR-8 user message).
    """
    separator = header.field_separator if header else DEFAULT_SEPARATOR
    encoding = header.encoding_characters if header else DEFAULT_ENCODING_CHARACTERS
    component = encoding[0]

    def field(number: int) -> str:
        return header.field(number) if header else ""

    message_type = field(9).split(component)
    event = message_type[1] if len(message_type) > 1 else ""
    timestamp = datetime.now().astimezone().strftime("%Y%m%d%H%M%S%z")
    msh = [
        "MSH", encoding,
        field(5), field(6), field(3), field(4),
        timestamp, "",
        component.join(("ACK", event, "ACK")),
        new_control_id(),
        field(11) or "P",
        field(12) or DEFAULT_VERSION,
    ]
    segments = [separator.join(msh), separator.join(("MSA", acknowledgement_code(header, code), field(10)))]
    if rejection is not None:
        error_name = _ERROR_NAMES.get(rejection.error_code, "")
        err = [
            "ERR", "", rejection.location,
            component.join((rejection.error_code, error_name, "HL70357")),
            "E", "", "", "",
            escape(rejection.reason, separator, encoding),
        ]
        segments.append(separator.join(err))
    return "\r".join(segments) + "\r"


def encode_ack(ack: str, charset: str) -> bytes:
    return ack.encode(charset, errors="replace")


# --- Listener ------------------------------------------------------------------


def server_tls_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    """Build a server TLS context (TLS 1.2 or later) from a PEM certificate chain and key.

    Raises OSError or ssl.SSLError when a file is missing or invalid.
    """
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(certfile=str(cert_file), keyfile=str(key_file))
    return context


class MllpListener:
    """An MLLP server accepting several connections, each processed one frame at a time.

    `read_timeout` bounds the silence inside a frame and `frame_timeout`
    the time for a whole frame. `idle_timeout` bounds the silence between
    frames, and None keeps idle connections open, as interface engines
    usually expect. `message_types` rejects the messages no mapping
    applies to, and `in_cohort` (a predicate on the parsed record) drops,
    after AA, the messages about patients outside the cohort.
    """

    def __init__(
        self,
        store: MessageStore,
        host: str = "127.0.0.1",
        port: int = 2575,
        *,
        ssl_context: ssl.SSLContext | None = None,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        read_timeout: float = DEFAULT_READ_TIMEOUT,
        frame_timeout: float = DEFAULT_FRAME_TIMEOUT,
        idle_timeout: float | None = None,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        message_types: MessageTypes | None = None,
        in_cohort: Callable[[SourceRecord], bool] | None = None,
    ):
        self.store = store
        self.host = host
        self.port = port
        self.ssl_context = ssl_context
        self.max_frame_bytes = max_frame_bytes
        self.read_timeout = read_timeout
        self.frame_timeout = frame_timeout
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections
        self.message_types = message_types
        self.in_cohort = in_cohort
        self.counts: Counter[str] = Counter()
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task] = set()

    async def start(self) -> None:
        """Bind and start accepting. Afterwards `port` is the bound port, which matters with port 0."""
        self._server = await asyncio.start_server(self._serve_connection, self.host, self.port, ssl=self.ssl_context)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info(
            "MLLP listener started on %s:%s (TLS %s, max frame %d bytes, store %s)",
            self.host, self.port, "on" if self.ssl_context else "off", self.max_frame_bytes, self.store.path,
        )

    async def stop(self) -> None:
        """Stop accepting, close open connections, and wait for them to finish."""
        if self._server is None:
            return
        self._server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        await self._server.wait_closed()
        self._server = None
        counts = ", ".join(f"{name} {value}" for name, value in sorted(self.counts.items())) or "no frame"
        log.info("MLLP listener on %s:%s stopped (%s)", self.host, self.port, counts)

    async def _serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = _peer_name(writer)
        if len(self._connections) >= self.max_connections:
            self.counts["refused_connections"] += 1
            log.warning("MLLP connection from %s closed at once: %d connections already open (maximum %d)",
                        peer, len(self._connections), self.max_connections)
            writer.close()
            return
        task = asyncio.current_task()
        self._connections.add(task)
        decoder = FrameDecoder(self.max_frame_bytes)
        frames = 0
        frame_deadline: float | None = None
        log.info("MLLP connection opened from %s", peer)
        try:
            while True:
                timeout = self.read_timeout if decoder.in_frame else self.idle_timeout
                if frame_deadline is not None:
                    timeout = max(0.0, min(timeout, frame_deadline - time.monotonic()))
                try:
                    data = await asyncio.wait_for(reader.read(READ_CHUNK_BYTES), timeout)
                except TimeoutError:
                    self._log_timeout(peer, decoder, timeout, frame_deadline)
                    break
                if not data:
                    if decoder.in_frame:
                        self.counts["truncated"] += 1
                        log.warning("MLLP connection from %s closed mid-frame, %d bytes discarded",
                                    peer, decoder.pending_bytes)
                    break
                completed = decoder.feed(data)
                for received in completed:
                    frames += 1
                    ack = await self._acknowledge_safely(received, peer)
                    if ack is not None:
                        writer.write(frame(ack))
                        await writer.drain()
                # The deadline runs from the start of the frame in progress, which is new when a frame completed.
                if not decoder.in_frame:
                    frame_deadline = None
                elif frame_deadline is None or completed:
                    frame_deadline = time.monotonic() + self.frame_timeout
        except (ConnectionError, ssl.SSLError) as error:
            log.warning("MLLP connection from %s failed: %s", peer, error)
        finally:
            self._connections.discard(task)
            if decoder.discarded_bytes:
                log.warning("MLLP connection from %s sent %d bytes outside any frame, discarded",
                            peer, decoder.discarded_bytes)
            writer.close()
            try:
                await writer.wait_closed()
            except (ConnectionError, ssl.SSLError):
                pass
            log.info("MLLP connection from %s closed after %d frame(s)", peer, frames)

    def _log_timeout(self, peer: str, decoder: FrameDecoder, timeout: float | None,
                     frame_deadline: float | None) -> None:
        if frame_deadline is not None and time.monotonic() >= frame_deadline:
            self.counts["truncated"] += 1
            log.warning("MLLP frame from %s not complete after %s s, %d bytes discarded, closing",
                        peer, self.frame_timeout, decoder.pending_bytes)
        elif decoder.in_frame:
            self.counts["truncated"] += 1
            log.warning("MLLP read from %s timed out after %s s mid-frame, %d bytes discarded, closing",
                        peer, timeout, decoder.pending_bytes)
        else:
            log.info("MLLP connection from %s idle for %s s, closing", peer, timeout)

    async def _acknowledge_safely(self, received: Frame | OversizeFrame, peer: str) -> bytes | None:
        """Run `_acknowledge`, turning an unexpected exception into AE so that one frame cannot end the connection."""
        try:
            return await self._acknowledge(received, peer)
        except Exception as error:  # noqa: BLE001 - any bug in checking one frame must not stop the listener
            self.counts["internal_error"] += 1
            size = received.size if isinstance(received, OversizeFrame) else len(received.content)
            # The exception text may quote the frame, so it goes to the DEBUG level only.
            log.error("MLLP frame of %d bytes from %s failed with %s, AE sent", size, peer, type(error).__name__)
            log.debug("MLLP frame failure details", exc_info=True)
            rejection = Rejection(t("mllp.error.internal"), "", APPLICATION_INTERNAL_ERROR)
            return encode_ack(build_ack(None, "AE", rejection), "utf-8")

    async def _acknowledge(self, received: Frame | OversizeFrame, peer: str) -> bytes | None:
        """Check, store and return the encoded ACK for one frame, or None when MSH-15 requests none."""
        if isinstance(received, OversizeFrame):
            return await self._reject_oversize(received, peer)

        # Parsing a message of several megabytes takes a while: a thread keeps other connections served.
        checked = await asyncio.to_thread(check_frame, received.content, self.message_types)
        header = checked.header
        if checked.rejection is not None:
            self.counts["rejected"] += 1
            log.warning("MLLP frame of %d bytes from %s rejected (MSH-10 %r): %s at %s",
                        len(received.content), peer, header.control_id if header else "",
                        checked.rejection.reason, checked.rejection.location or "-")
            await self._record_rejection(checked.text, len(received.content), peer, checked.rejection)
            return self._encoded_ack(header, "AR", checked.charset, checked.rejection, peer)

        if self.in_cohort is not None and not any(self.in_cohort(record) for record in checked.records):
            self.counts["outside_cohort"] += 1
            log.info("MLLP message %r from %s|%s at %s is about a patient outside the cohort: acknowledged, not stored",
                     header.control_id, header.sending_application, header.sending_facility, peer)
            return self._encoded_ack(header, "AA", checked.charset, None, peer)

        try:
            stored_id, duplicate = await asyncio.to_thread(self.store.accept, checked.message)
        except (sqlite3.Error, OSError, ValueError) as error:
            self.counts["store_failed"] += 1
            log.error("MLLP message %r from %s at %s could not be stored: %s: %s",
                      header.control_id, header.sending_application, peer, type(error).__name__, error)
            rejection = Rejection(t("mllp.error.storage"), "", APPLICATION_INTERNAL_ERROR)
            return self._encoded_ack(header, "AE", checked.charset, rejection, peer)

        if duplicate:
            self.counts["duplicate"] += 1
            log.info("MLLP message %r from %s|%s at %s is a duplicate, acknowledged again",
                     header.control_id, header.sending_application, header.sending_facility, peer)
        else:
            self.counts["stored"] += 1
            log.info("MLLP message %r from %s|%s at %s stored as #%d (%d bytes)",
                     header.control_id, header.sending_application, header.sending_facility, peer,
                     stored_id, len(received.content))
        return self._encoded_ack(header, "AA", checked.charset, None, peer)

    async def _record_rejection(self, text: str, size: int, peer: str, rejection: Rejection) -> None:
        """Keep a rejected frame for `sonco-fhir errors list --rejected`; a failure is logged, and the AR is sent anyway."""
        try:
            rejection_id = await asyncio.to_thread(self.store.record_rejection, text, size, peer, rejection.reason,
                                                   rejection.location, rejection.error_code)
        except sqlite3.Error as error:
            log.error("MLLP frame from %s rejected but not recorded in the store: %s: %s",
                      peer, type(error).__name__, error)
            return
        log.info("MLLP frame rejected from %s recorded as rejection #%d", peer, rejection_id)

    def _encoded_ack(self, header: MessageHeader | None, code: str, charset: str, rejection: Rejection | None,
                     peer: str) -> bytes | None:
        if not ack_requested(header, code):
            self.counts["ack_not_requested"] += 1
            log.info("MLLP message %r from %s: no accept acknowledgement sent, as MSH-15 %s requests",
                     header.control_id, peer, header.field(15))
            return None
        return encode_ack(build_ack(header, code, rejection), charset)

    async def _reject_oversize(self, received: OversizeFrame, peer: str) -> bytes | None:
        self.counts["oversize"] += 1
        text, charset = decode_frame(received.head)
        header = read_header(text)
        log.warning("MLLP frame of %d bytes from %s rejected (MSH-10 %r): larger than the maximum of %d bytes",
                    received.size, peer, header.control_id if header else "", self.max_frame_bytes)
        reason = t("mllp.reject.oversize", size=received.size, max=self.max_frame_bytes)
        rejection = Rejection(reason, "", APPLICATION_INTERNAL_ERROR)
        await self._record_rejection(text, received.size, peer, rejection)
        return self._encoded_ack(header, "AR", charset, rejection, peer)


def _peer_name(writer: asyncio.StreamWriter) -> str:
    peer = writer.get_extra_info("peername")
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer)
