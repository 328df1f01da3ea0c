"""MLLP listener and message store, tested with real sockets on 127.0.0.1 and a real SQLite file."""

import asyncio
import socket
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from sonco_fhir.config import load_settings
from sonco_fhir.connectors.mllp import END_BLOCK, START_BLOCK, FrameDecoder, MllpListener
from sonco_fhir.connectors.store import MessageStore, store_path

from conftest import CASES

ADT_A01 = CASES / "hl7v2-ansforge-pamfr-cisis" / "SGL_admission_ADT_A01.er7"
SOCKET_TIMEOUT = 10.0


def sample_message() -> str:
    """The ANS admission sample, with CR segment separators as a sender puts them on the wire."""
    text = ADT_A01.read_text(encoding="utf-8")
    return "\r".join(line for line in text.splitlines() if line.strip())


def minimal_message(control_id: str, sender: str = "LAB") -> str:
    msh = f"MSH|^~\\&|{sender}|SITE|SONCO|SONCO|20240306111154||ADT^A08^ADT_A01|{control_id}|P|2.5"
    return msh + "\rEVN||20240306111154\rPID|1||123^^^SITE^PI"


class RunningListener:
    """An MllpListener served by an event loop in a background thread."""

    def __init__(self, store: MessageStore, **options):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.listener = MllpListener(store, "127.0.0.1", 0, **options)
        self._call(self.listener.start())

    def _call(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=SOCKET_TIMEOUT)

    @property
    def port(self) -> int:
        return self.listener.port

    def stop(self) -> None:
        """Stop the listener and its loop; a second call does nothing."""
        if self.loop.is_closed():
            return
        self._call(self.listener.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=SOCKET_TIMEOUT)
        self.loop.close()


@pytest.fixture
def store():
    with MessageStore(store_path(load_settings().data_dir)) as opened:
        yield opened


@pytest.fixture
def running(store):
    server = RunningListener(store, max_frame_bytes=64 * 1024, read_timeout=5.0)
    yield server
    server.stop()


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=SOCKET_TIMEOUT)


def read_frame(client: socket.socket) -> str:
    data = b""
    while not data.endswith(END_BLOCK):
        chunk = client.recv(65536)
        if not chunk:
            raise ConnectionError(f"connection closed before a complete ACK frame, got {data!r}")
        data += chunk
    assert data.startswith(START_BLOCK)
    return data[1:-2].decode("utf-8")


def exchange(client: socket.socket, payload: bytes) -> dict[str, list[str]]:
    """Send one framed payload and return the ACK's segments, as lists of fields, by segment name."""
    client.sendall(START_BLOCK + payload + END_BLOCK)
    ack = read_frame(client)
    segments = [segment.split("|") for segment in ack.split("\r") if segment]
    return {segment[0]: segment for segment in segments}


def send(port: int, payload: bytes) -> dict[str, list[str]]:
    with connect(port) as client:
        return exchange(client, payload)


def test_ans_admission_acknowledged_and_stored(running, store):
    ack = send(running.port, sample_message().encode("utf-8"))

    assert ack["MSA"][1] == "AA"
    assert ack["MSA"][2] == "3975"
    assert "ERR" not in ack
    rows = store.pending()
    assert len(rows) == 1
    assert rows[0].control_id == "3975"
    assert rows[0].sending_application == "GAM"
    assert rows[0].sending_facility == "CHU-X"
    assert rows[0].message == sample_message()


def test_ack_header_swaps_sender_and_receiver(running):
    ack = send(running.port, sample_message().encode("utf-8"))

    msh = ack["MSH"]
    assert msh[1] == "^~\\&"
    assert msh[2:6] == ["DPI", "CHU-X", "GAM", "CHU-X"]
    assert msh[8] == "ACK^A01^ACK"
    assert msh[9] not in ("", "3975")
    assert msh[11] == "2.5^FRA^2.11"


def test_ack_uses_message_encoding_characters(running):
    message = "MSH#*$!@#LAB#SITE#SONCO#SONCO#20240306111154##ADT*A08#X-1#P#2.5\rPID#1"
    with connect(running.port) as client:
        client.sendall(START_BLOCK + message.encode() + END_BLOCK)
        ack = read_frame(client)

    msh, msa = ack.split("\r")[:2]
    assert msh.startswith("MSH#*$!@#SONCO#SONCO#LAB#SITE#")
    assert "#ACK*A08*ACK#" in msh
    assert msa == "MSA#AA#X-1"


def test_duplicate_acknowledged_once_stored(running, store):
    payload = sample_message().encode("utf-8")
    first = send(running.port, payload)
    second = send(running.port, payload)

    assert first["MSA"][1:3] == ["AA", "3975"]
    assert second["MSA"][1:3] == ["AA", "3975"]
    assert store.count() == 1


def test_garbage_frame_rejected_with_err(running, store):
    ack = send(running.port, bytes(range(256)) * 4)

    assert ack["MSA"][1] == "AR"
    assert "ERR" in ack
    assert ack["ERR"][2] == "MSH^1"
    assert ack["ERR"][8] != ""
    assert store.count() == 0


def test_missing_control_id_rejected(running, store):
    message = minimal_message("").encode()
    ack = send(running.port, message)

    assert ack["MSA"][1] == "AR"
    assert ack["ERR"][2] == "MSH^1^10"
    assert ack["ERR"][3].startswith("101^")
    assert "MSH-10" in ack["ERR"][8]
    assert store.count() == 0


def test_concurrent_clients_all_stored(running, store):
    clients, per_client = 5, 20

    def run_client(number: int) -> list[str]:
        codes = []
        with connect(running.port) as client:
            for index in range(per_client):
                ack = exchange(client, minimal_message(f"C{number}-{index}").encode())
                codes.append(ack["MSA"][1])
        return codes

    with ThreadPoolExecutor(max_workers=clients) as pool:
        results = list(pool.map(run_client, range(clients)))

    codes = [code for client_codes in results for code in client_codes]
    assert codes.count("AA") == clients * per_client
    assert store.count() == clients * per_client


def test_connection_closed_mid_frame_keeps_listener(running, store):
    with connect(running.port) as client:
        client.sendall(START_BLOCK + minimal_message("CUT-1").encode()[:40])

    ack = send(running.port, minimal_message("AFTER-1").encode())

    assert ack["MSA"][1:3] == ["AA", "AFTER-1"]
    assert store.count() == 1


def test_oversize_frame_rejected_connection_kept(running, store):
    big = minimal_message("BIG-1") + "\rNTE|1||" + "x" * (200 * 1024)
    with connect(running.port) as client:
        rejected = exchange(client, big.encode())
        accepted = exchange(client, minimal_message("SMALL-1").encode())

    assert rejected["MSA"][1:3] == ["AR", "BIG-1"]
    assert "ERR" in rejected
    assert accepted["MSA"][1:3] == ["AA", "SMALL-1"]
    assert store.count() == 1


def test_bytes_between_frames_ignored(running, store):
    with connect(running.port) as client:
        client.sendall(b"\r\nnoise")
        ack = exchange(client, minimal_message("NOISE-1").encode())

    assert ack["MSA"][1:3] == ["AA", "NOISE-1"]


def test_decoder_end_block_split_across_reads():
    decoder = FrameDecoder(max_frame_bytes=1024)
    assert decoder.feed(START_BLOCK + b"MSH|x\x1c") == []
    frames = decoder.feed(b"\x0d" + START_BLOCK + b"MSH|y" + END_BLOCK)

    assert [received.content for received in frames] == [b"MSH|x", b"MSH|y"]
    assert not decoder.in_frame


def test_store_commit_visible_to_new_connection(store):
    stored_id, duplicate = store.accept(minimal_message("DUR-1"))

    with sqlite3.connect(store.path) as other:
        rows = other.execute("SELECT control_id, status FROM messages WHERE id = ?", (stored_id,)).fetchall()
        journal_mode = other.execute("PRAGMA journal_mode").fetchone()[0]
    assert duplicate is False
    assert rows == [("DUR-1", "pending")]
    assert journal_mode == "wal"


def test_store_status_transitions(store):
    first, _ = store.accept(minimal_message("ST-1"))
    second, _ = store.accept(minimal_message("ST-2"))

    store.mark_done(first)
    store.mark_error(second, "no mapping for ADT^A08", "MSH-9")
    assert [row.id for row in store.pending()] == []
    errors = store.errors()
    assert [(row.id, row.last_error, row.error_location, row.attempts) for row in errors] == [
        (second, "no mapping for ADT^A08", "MSH-9", 1)
    ]

    store.reset_for_replay(second)
    assert [row.id for row in store.pending()] == [second]
    assert store.get(first).status == "done"
    with pytest.raises(KeyError):
        store.mark_done(999)


def test_store_duplicate_key_includes_sender(store):
    assert store.accept(minimal_message("K-1", sender="LAB")) == (1, False)
    assert store.accept(minimal_message("K-1", sender="LAB")) == (None, True)
    assert store.accept(minimal_message("K-1", sender="RIS"))[1] is False
