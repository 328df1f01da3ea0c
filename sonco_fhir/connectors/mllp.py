"""MLLP listener for HL7 v2 feeds, on asyncio.

Each frame (start block 0x0B, message, end block 0x1C 0x0D) is checked,
committed to the message store, and only then acknowledged in original
mode: AA when stored (or already stored), AR when the frame is not a
usable HL7 v2 message, AE when the store fails. Mapping and loading into
FHIR happen later, from the store.

Logs name the peer, MSH-3, MSH-4, MSH-10 and sizes, never other field
values, because every other segment may carry patient data.
"""

import asyncio
import logging
import secrets
import sqlite3
import ssl
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from ..i18n import t
from .hl7v2 import MessageError, message_record, split_messages
from .store import MessageHeader, MessageStore, read_header

log = logging.getLogger(__name__)

START_BLOCK = b"\x0b"
END_BLOCK = b"\x1c\x0d"
DEFAULT_MAX_FRAME_BYTES = 16 * 1024 * 1024
# Seconds of silence allowed while a frame is incomplete; the connection is closed after that.
DEFAULT_READ_TIMEOUT = 30.0
READ_CHUNK_BYTES = 64 * 1024
# Bytes kept from the start of an oversize frame, to read its MSH for the AR.
OVERSIZE_HEAD_BYTES = 8 * 1024

DEFAULT_SEPARATOR = "|"
DEFAULT_ENCODING_CHARACTERS = "^~\\&"
# Used in an ACK when the received frame has no readable MSH-12.
DEFAULT_VERSION = "2.5"

# HL7 table 0357 (message error condition codes), for ERR-3.
SEGMENT_SEQUENCE_ERROR = "100"
REQUIRED_FIELD_MISSING = "101"
DATA_TYPE_ERROR = "102"
APPLICATION_INTERNAL_ERROR = "207"
_ERROR_NAMES = {
    SEGMENT_SEQUENCE_ERROR: "Segment sequence error",
    REQUIRED_FIELD_MISSING: "Required field missing",
    DATA_TYPE_ERROR: "Data type error",
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
    rejection: Rejection | None = None


def decode_frame(content: bytes) -> tuple[str, str]:
    """Decode frame bytes as UTF-8, or Latin-1 (which decodes any byte) for 8859/1 senders."""
    try:
        return content.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return content.decode("latin-1"), "latin-1"


def check_frame(content: bytes) -> CheckedFrame:
    """Decode and parse a frame just enough to decide between storing it and AR."""
    text, charset = decode_frame(content)
    checked = CheckedFrame(text, charset, read_header(text))
    messages = split_messages(text)
    if not messages:
        checked.rejection = Rejection(t("mllp.reject.empty"), "MSH^1", SEGMENT_SEQUENCE_ERROR)
        return checked

    message = messages[0][1]
    if not message.startswith("MSH"):
        checked.rejection = Rejection(t("problem.v2_no_msh"), "MSH^1", SEGMENT_SEQUENCE_ERROR)
        return checked

    if len(messages) > 1:
        reason = t("mllp.reject.several", count=len(messages))
        checked.rejection = Rejection(reason, "MSH^2", SEGMENT_SEQUENCE_ERROR)
        return checked

    if checked.header is None:
        checked.rejection = Rejection(t("mllp.reject.separators"), "MSH^1^2", DATA_TYPE_ERROR)
        return checked

    try:
        record = message_record("mllp", 1, message, 1)
    except (ValueError, IndexError, KeyError) as error:
        # Only our own messages are shown: a library's may quote the segment text.
        reason = str(error) if isinstance(error, MessageError) else type(error).__name__
        checked.rejection = Rejection(t("problem.v2_unparseable", reason=reason), "", DATA_TYPE_ERROR)
        return checked

    if not record.data["MSH"].get("10") or not checked.header.control_id:
        checked.rejection = Rejection(t("mllp.reject.no_control_id"), "MSH^1^10", REQUIRED_FIELD_MISSING)
        return checked

    checked.message = message
    return checked


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


def build_ack(header: MessageHeader | None, code: str, rejection: Rejection | None = None) -> str:
    """Build an original-mode ACK for a message whose MSH is `header` (None when unreadable).

    The ACK uses the message's separators, swaps sender and receiver, and
    echoes MSH-10 in MSA-2 and the version in MSH-12. A rejection adds an
    ERR segment (v2.5 layout: ERR-2 location, ERR-3 code, ERR-4 severity,
    ERR-8 user message).
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
    segments = [separator.join(msh), separator.join(("MSA", code, field(10)))]
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

    `read_timeout` bounds the silence inside a frame. `idle_timeout`
    bounds the silence between frames, and None keeps idle connections
    open, as interface engines usually expect.
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
        idle_timeout: float | None = None,
    ):
        self.store = store
        self.host = host
        self.port = port
        self.ssl_context = ssl_context
        self.max_frame_bytes = max_frame_bytes
        self.read_timeout = read_timeout
        self.idle_timeout = idle_timeout
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
        task = asyncio.current_task()
        self._connections.add(task)
        peer = _peer_name(writer)
        decoder = FrameDecoder(self.max_frame_bytes)
        frames = 0
        log.info("MLLP connection opened from %s", peer)
        try:
            while True:
                timeout = self.read_timeout if decoder.in_frame else self.idle_timeout
                try:
                    data = await asyncio.wait_for(reader.read(READ_CHUNK_BYTES), timeout)
                except TimeoutError:
                    self._log_timeout(peer, decoder, timeout)
                    break
                if not data:
                    if decoder.in_frame:
                        self.counts["truncated"] += 1
                        log.warning("MLLP connection from %s closed mid-frame, %d bytes discarded",
                                    peer, decoder.pending_bytes)
                    break
                for received in decoder.feed(data):
                    frames += 1
                    writer.write(frame(await self._acknowledge(received, peer)))
                    await writer.drain()
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

    def _log_timeout(self, peer: str, decoder: FrameDecoder, timeout: float | None) -> None:
        if decoder.in_frame:
            self.counts["truncated"] += 1
            log.warning("MLLP read from %s timed out after %s s mid-frame, %d bytes discarded, closing",
                        peer, timeout, decoder.pending_bytes)
        else:
            log.info("MLLP connection from %s idle for %s s, closing", peer, timeout)

    async def _acknowledge(self, received: Frame | OversizeFrame, peer: str) -> bytes:
        """Check, store and return the encoded ACK for one frame."""
        if isinstance(received, OversizeFrame):
            return self._reject_oversize(received, peer)

        checked = check_frame(received.content)
        header = checked.header
        if checked.rejection is not None:
            self.counts["rejected"] += 1
            log.warning("MLLP frame of %d bytes from %s rejected (MSH-10 %r): %s at %s",
                        len(received.content), peer, header.control_id if header else "",
                        checked.rejection.reason, checked.rejection.location or "-")
            return encode_ack(build_ack(header, "AR", checked.rejection), checked.charset)

        try:
            stored_id, duplicate = await asyncio.to_thread(self.store.accept, checked.message)
        except (sqlite3.Error, OSError, ValueError) as error:
            self.counts["store_failed"] += 1
            log.error("MLLP message %r from %s at %s could not be stored: %s: %s",
                      header.control_id, header.sending_application, peer, type(error).__name__, error)
            rejection = Rejection(t("mllp.error.storage"), "", APPLICATION_INTERNAL_ERROR)
            return encode_ack(build_ack(header, "AE", rejection), checked.charset)

        if duplicate:
            self.counts["duplicate"] += 1
            log.info("MLLP message %r from %s|%s at %s is a duplicate, acknowledged again",
                     header.control_id, header.sending_application, header.sending_facility, peer)
        else:
            self.counts["stored"] += 1
            log.info("MLLP message %r from %s|%s at %s stored as #%d (%d bytes)",
                     header.control_id, header.sending_application, header.sending_facility, peer,
                     stored_id, len(received.content))
        return encode_ack(build_ack(header, "AA"), checked.charset)

    def _reject_oversize(self, received: OversizeFrame, peer: str) -> bytes:
        self.counts["oversize"] += 1
        text, charset = decode_frame(received.head)
        header = read_header(text)
        log.warning("MLLP frame of %d bytes from %s rejected (MSH-10 %r): larger than the maximum of %d bytes",
                    received.size, peer, header.control_id if header else "", self.max_frame_bytes)
        reason = t("mllp.reject.oversize", size=received.size, max=self.max_frame_bytes)
        rejection = Rejection(reason, "", APPLICATION_INTERNAL_ERROR)
        return encode_ack(build_ack(header, "AR", rejection), charset)


def _peer_name(writer: asyncio.StreamWriter) -> str:
    peer = writer.get_extra_info("peername")
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer)
