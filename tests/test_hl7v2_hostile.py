"""Malformed and hostile input on a real MLLP socket: the listener sends an ACK or closes the connection, and keeps serving.

After each attack a well-formed message, sent on a new connection, must
still get AA. The listener checks message types against the real
mappings/hl7v2 folder, as `sonco-fhir listen mllp` does.
"""

import random
import socket
import sqlite3
import time

import pytest

from sonco_fhir.connectors.mllp import END_BLOCK, START_BLOCK, MessageTypes

from conftest import REPOSITORY
from test_mllp import connect, exchange, minimal_message, read_frame, RunningListener, send, store  # noqa: F401 (store is a fixture)

MAX_FRAME_BYTES = 6 * 1024 * 1024
READ_TIMEOUT = 1.0
FRAME_TIMEOUT = 2.0
MAX_CONNECTIONS = 8


@pytest.fixture
def running(store):
    server = RunningListener(
        store, max_frame_bytes=MAX_FRAME_BYTES, read_timeout=READ_TIMEOUT, frame_timeout=FRAME_TIMEOUT,
        max_connections=MAX_CONNECTIONS, message_types=MessageTypes.from_folder(REPOSITORY / "mappings" / "hl7v2"),
    )
    yield server
    server.stop()


def assert_still_serving(running, store, control_id: str) -> None:
    """A new connection gets AA for a valid message, which is stored."""
    before = store.count()
    ack = send(running.port, minimal_message(control_id).encode())
    assert ack["MSA"][1:3] == ["AA", control_id]
    assert store.count() == before + 1


def closed_by_server(client: socket.socket, seconds: float) -> bool:
    """Tell whether the server closes `client` within `seconds`, reading and dropping whatever it sends."""
    client.settimeout(seconds)
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            if client.recv(4096) == b"":
                return True
    except (TimeoutError, socket.timeout):
        return False
    except ConnectionResetError:
        return True
    return False


def test_truncated_frame_then_close(running, store):
    with connect(running.port) as client:
        client.sendall(START_BLOCK + minimal_message("CUT-1").encode()[:30])

    assert_still_serving(running, store, "AFTER-CUT")
    assert store.count() == 1


def test_end_block_without_start_ignored(running, store):
    with connect(running.port) as client:
        client.sendall(minimal_message("NOSTART-1").encode() + END_BLOCK)
        ack = exchange(client, minimal_message("NOSTART-2").encode())

    assert ack["MSA"][1:3] == ["AA", "NOSTART-2"]
    assert [row.control_id for row in store.pending()] == ["NOSTART-2"]


def test_binary_garbage_framed_and_unframed(running, store):
    generator = random.Random(20240306)
    garbage = bytes(generator.randrange(256) for _ in range(64 * 1024))
    # Garbage without the MLLP block characters, framed: one AR.
    framed = garbage.replace(START_BLOCK, b"").replace(b"\x1c", b"")
    with connect(running.port) as client:
        ack = exchange(client, framed)
        assert ack["MSA"][1] == "AR"
        assert ack["ERR"][2] == "MSH^1"
    # Raw garbage, block characters included, then a close.
    with connect(running.port) as client:
        client.sendall(garbage)

    assert_still_serving(running, store, "AFTER-GARBAGE")
    assert store.count() == 1


def test_large_message_under_maximum_stored(running, store):
    note = "x" * (4 * 1024 * 1024)
    message = minimal_message("BIG-OK") + "\rNTE|1||" + note

    ack = send(running.port, message.encode())

    assert ack["MSA"][1:3] == ["AA", "BIG-OK"]
    stored = store.pending()
    assert [row.control_id for row in stored] == ["BIG-OK"]
    assert len(stored[0].message) == len(message)


def test_large_message_over_maximum_rejected(running, store):
    message = minimal_message("BIG-NO") + "\rNTE|1||" + "y" * (7 * 1024 * 1024)

    with connect(running.port) as client:
        rejected = exchange(client, message.encode())
        accepted = exchange(client, minimal_message("AFTER-BIG").encode())

    assert rejected["MSA"][1:3] == ["AR", "BIG-NO"]
    assert rejected["ERR"][3].startswith("207^")
    assert str(MAX_FRAME_BYTES) in rejected["ERR"][8]
    assert accepted["MSA"][1:3] == ["AA", "AFTER-BIG"]
    assert [row.control_id for row in store.pending()] == ["AFTER-BIG"]


@pytest.mark.parametrize("msh", [
    "MSH|^~\\|LAB|SITE|SONCO|SONCO|20240306111154||ADT^A08|W-1|P|2.5",
    "MSH|abcd|LAB|SITE|SONCO|SONCO|20240306111154||ADT^A08|W-2|P|2.5",
    "MSH|^~\\&^|LAB|SITE|SONCO|SONCO|20240306111154||ADT^A08|W-3|P|2.5",
    "MSH",
])
def test_wrong_msh2_rejected(running, store, msh):
    ack = send(running.port, (msh + "\rPID|1||123^^^SITE^PI").encode())

    assert ack["MSA"][1] == "AR"
    assert ack["ERR"][2] == "MSH^1^2"
    assert ack["ERR"][3].startswith("102^")
    assert_still_serving(running, store, "AFTER-MSH2")


@pytest.mark.parametrize("version, location, code", [
    ("9.9", "MSH^1^12", "203"),
    ("2.5.9", "MSH^1^12", "203"),
    ("", "MSH^1^12", "101"),
])
def test_unknown_version_rejected(running, store, version, location, code):
    message = minimal_message("V-1").replace("|P|2.5", f"|P|{version}")

    ack = send(running.port, message.encode())

    assert ack["MSA"][1:3] == ["AR", "V-1"]
    assert ack["ERR"][2] == location
    assert ack["ERR"][3].startswith(code + "^")
    if version:
        assert version in ack["ERR"][8]
    assert store.count() == 0
    assert_still_serving(running, store, "AFTER-VERSION")


def test_missing_control_id_rejected(running, store):
    ack = send(running.port, minimal_message("").encode())

    assert ack["MSA"][1:3] == ["AR", ""]
    assert ack["ERR"][2] == "MSH^1^10"
    assert ack["ERR"][3].startswith("101^")
    assert_still_serving(running, store, "AFTER-NO-ID")


@pytest.mark.parametrize("message_type, location, code", [
    ("ZZZ^Z01", "MSH^1^9^1", "200"),
    ("ACK^T10", "MSH^1^9^1", "200"),
    ("ADT^A99", "MSH^1^9^2", "201"),
])
def test_unsupported_message_type_rejected(running, store, message_type, location, code):
    message = minimal_message("T-1").replace("ADT^A08^ADT_A01", message_type)

    ack = send(running.port, message.encode())

    assert ack["MSA"][1:3] == ["AR", "T-1"]
    assert ack["ERR"][2] == location
    assert ack["ERR"][3].startswith(code + "^")
    # The ERR segment escapes the component separator of the quoted type.
    assert message_type.replace("^", "\\S\\") in ack["ERR"][8]
    assert store.count() == 0


def test_silent_client_does_not_block(running, store):
    with connect(running.port) as silent:
        assert_still_serving(running, store, "BESIDE-SILENT")
        # With no idle timeout the silent connection stays open.
        assert not closed_by_server(silent, 0.5)


def test_disconnect_mid_frame(running, store):
    message = minimal_message("MID-1").encode()
    with connect(running.port) as client:
        client.sendall(START_BLOCK + message[: len(message) // 2])
        client.shutdown(socket.SHUT_RDWR)

    assert_still_serving(running, store, "AFTER-MID")
    assert store.count() == 1


def test_connections_beyond_maximum_closed(running, store):
    extra = 12
    clients = [connect(running.port) for _ in range(MAX_CONNECTIONS + extra)]
    try:
        deadline = time.monotonic() + 10
        while running.listener.counts["refused_connections"] < extra and time.monotonic() < deadline:
            time.sleep(0.05)
        assert running.listener.counts["refused_connections"] == extra
        closed = [client for client in clients if closed_by_server(client, 0.2)]
        assert len(closed) == extra
    finally:
        for client in clients:
            client.close()

    deadline = time.monotonic() + 10
    while running.listener._connections and time.monotonic() < deadline:
        time.sleep(0.05)
    assert_still_serving(running, store, "AFTER-FLOOD")


def test_slow_trickle_closed_after_frame_timeout(running, store):
    message = START_BLOCK + minimal_message("SLOW-1").encode()
    started = time.monotonic()
    closed_at = None
    with connect(running.port) as client:
        for byte in message:
            try:
                client.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                closed_at = time.monotonic()
                break
            # Well under the read timeout, so only the frame timeout can end the connection.
            time.sleep(READ_TIMEOUT / 4)
            if time.monotonic() - started > FRAME_TIMEOUT + 1.5:
                closed_at = time.monotonic() if closed_by_server(client, 0.5) else None
                break
        assert_still_serving(running, store, "BESIDE-SLOW")

    assert closed_at is not None
    assert FRAME_TIMEOUT <= closed_at - started < FRAME_TIMEOUT + 3
    assert running.listener.counts["truncated"] == 1
    assert [row.control_id for row in store.pending()] == ["BESIDE-SLOW"]


def test_many_valid_after_hostile_mix(running, store):
    with connect(running.port) as client:
        client.sendall(b"\x00" * 1000 + START_BLOCK + b"\xff\xfe" * 500 + END_BLOCK)
        first = read_frame(client)
        acks = [exchange(client, minimal_message(f"MIX-{index}").encode()) for index in range(20)]

    assert "MSA|AR|" in first
    assert [ack["MSA"][1:3] for ack in acks] == [["AA", f"MIX-{index}"] for index in range(20)]
    assert store.count() == 20


# --- Acknowledgement modes ---------------------------------------------------------


def enhanced_message(control_id: str, accept: str, application: str = "NE", version: str = "2.5") -> str:
    msh = (f"MSH|^~\\&|LAB|SITE|SONCO|SONCO|20240306111154||ADT^A08^ADT_A01|{control_id}|P|{version}"
           f"|||{accept}|{application}")
    return msh + "\rEVN||20240306111154\rPID|1||123^^^SITE^PI"


def test_enhanced_always_gets_commit_accept(running, store):
    ack = send(running.port, enhanced_message("E-AL", "AL").encode())

    assert ack["MSA"][1:3] == ["CA", "E-AL"]
    assert "ERR" not in ack
    assert store.count() == 1


def test_enhanced_rejection_gets_commit_reject(running, store):
    message = enhanced_message("E-CR", "AL").replace("|P|2.5", "|P|7.0")

    ack = send(running.port, message.encode())

    assert ack["MSA"][1:3] == ["CR", "E-CR"]
    assert ack["ERR"][2] == "MSH^1^12"
    assert store.count() == 0


def test_enhanced_never_sends_no_ack(running, store):
    with connect(running.port) as client:
        client.sendall(START_BLOCK + enhanced_message("E-NE", "NE").encode() + END_BLOCK)
        # The next ACK on the connection is the one for the original-mode message.
        ack = exchange(client, minimal_message("AFTER-NE").encode())

    assert ack["MSA"][1:3] == ["AA", "AFTER-NE"]
    assert [row.control_id for row in store.pending()] == ["E-NE", "AFTER-NE"]
    assert running.listener.counts["ack_not_requested"] == 1


def test_enhanced_error_only(running, store):
    with connect(running.port) as client:
        client.sendall(START_BLOCK + enhanced_message("E-ER-OK", "ER").encode() + END_BLOCK)
        failed = exchange(client, enhanced_message("E-ER-BAD", "ER", version="1.0").encode())

    assert failed["MSA"][1:3] == ["CR", "E-ER-BAD"]
    assert [row.control_id for row in store.pending()] == ["E-ER-OK"]


def test_enhanced_success_only(running, store):
    with connect(running.port) as client:
        client.sendall(START_BLOCK + enhanced_message("E-SU-BAD", "SU", version="1.0").encode() + END_BLOCK)
        accepted = exchange(client, enhanced_message("E-SU-OK", "SU").encode())

    assert accepted["MSA"][1:3] == ["CA", "E-SU-OK"]
    assert [row.control_id for row in store.pending()] == ["E-SU-OK"]


def test_application_ack_request_only_is_enhanced(running, store):
    ack = send(running.port, enhanced_message("E-16", "", application="AL").encode())

    assert ack["MSA"][1:3] == ["CA", "E-16"]
    assert store.count() == 1


def test_invalid_ack_condition_rejected(running, store):
    ack = send(running.port, enhanced_message("E-XX", "XX").encode())

    assert ack["MSA"][1:3] == ["CR", "E-XX"]
    assert ack["ERR"][2] == "MSH^1^15"
    assert ack["ERR"][3].startswith("103^")
    assert "XX" in ack["ERR"][8]
    assert store.count() == 0


def test_store_failure_gets_application_error(running, store, monkeypatch):
    def failing_accept(text):
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(store, "accept", failing_accept)
    with connect(running.port) as client:
        original = exchange(client, minimal_message("AE-1").encode())
        enhanced = exchange(client, enhanced_message("CE-1", "AL").encode())

    assert original["MSA"][1:3] == ["AE", "AE-1"]
    assert original["ERR"][3].startswith("207^")
    assert original["ERR"][4] == "E"
    assert enhanced["MSA"][1:3] == ["CE", "CE-1"]
    assert running.listener.counts["store_failed"] == 2


def test_msa2_echoes_control_id_with_escapes(running, store):
    control_id = "A\\F\\B-42"
    ack = send(running.port, minimal_message(control_id).encode())

    assert ack["MSA"][1:3] == ["AA", control_id]
    assert store.pending()[0].control_id == control_id


def test_steady_stream_not_cut_by_frame_timeout(running, store):
    # Each write ends in the middle of the next frame, for longer than the frame timeout in total.
    messages = [START_BLOCK + minimal_message(f"STREAM-{index}").encode() + END_BLOCK for index in range(12)]
    stream = b"".join(messages)
    chunk = len(messages[0]) + 10
    started = time.monotonic()
    with connect(running.port) as client:
        for offset in range(0, len(stream), chunk):
            client.sendall(stream[offset:offset + chunk])
            time.sleep(FRAME_TIMEOUT / 8)
        received = b""
        while received.count(END_BLOCK) < len(messages):
            chunk_received = client.recv(65536)
            assert chunk_received, f"connection closed after {received.count(END_BLOCK)} ACKs"
            received += chunk_received

    acks = [ack.decode() for ack in received.split(END_BLOCK) if ack]
    assert time.monotonic() - started > FRAME_TIMEOUT
    assert [ack.split("\r")[1] for ack in acks] == [f"MSA|AA|STREAM-{index}" for index in range(12)]
    assert running.listener.counts["truncated"] == 0


# --- Rejected frames kept for `sonco-fhir errors` -------------------------------------


def test_rejected_frame_recorded_and_replayed(running, store, tmp_path, monkeypatch):
    import shutil

    import yaml
    from typer.testing import CliRunner

    from sonco_fhir.cli.main import build_app

    message = minimal_message("REJ-1").replace("ADT^A08^ADT_A01", "ZZZ^Z01")
    ack = send(running.port, message.encode())
    assert ack["MSA"][1:3] == ["AR", "REJ-1"]

    rejections = store.rejections()
    assert [(row.control_id, row.sending_application, row.location, row.error_code) for row in rejections] == [
        ("REJ-1", "LAB", "MSH^1^9^1", "200")]
    assert rejections[0].message == message
    assert store.count() == 0

    runner = CliRunner()
    listed = runner.invoke(build_app(), ["--lang", "en", "errors", "list", "--rejected"])
    assert listed.exit_code == 0, listed.output
    assert "REJ-1" in listed.output
    summary = runner.invoke(build_app(), ["--lang", "en", "errors", "list"])
    assert "1 frame(s) rejected at reception (AR)" in summary.output
    still = runner.invoke(build_app(), ["--lang", "en", "errors", "replay", str(rejections[0].id), "--rejected"])
    assert still.exit_code == 1, still.output
    assert f"rejected frame {rejections[0].id} is still rejected" in still.output

    # A mapping for ZZZ^Z01 is added: the replay stores the message and deletes the rejection.
    mappings = tmp_path / "mappings"
    shutil.copytree(REPOSITORY / "mappings", mappings)
    adt = yaml.safe_load((mappings / "hl7v2" / "adt-patient.yaml").read_text(encoding="utf-8"))
    adt["applies_to"] = {"message_type": ["ZZZ"], "trigger_event": ["Z01"]}
    adt["mapping"] = "zzz-test"
    (mappings / "hl7v2" / "zzz-test.yaml").write_text(yaml.safe_dump(adt), encoding="utf-8")
    monkeypatch.setenv("SONCO_MAPPINGS_DIR", str(mappings))
    replayed = runner.invoke(build_app(), ["--lang", "en", "errors", "replay", "--all", "--rejected"])

    assert replayed.exit_code == 0, replayed.output
    assert "1 rejected frame(s) now stored, 0 still rejected." in replayed.output
    assert [row.control_id for row in store.pending()] == ["REJ-1"]
    assert store.rejections() == []


def test_logs_carry_no_patient_value(running, store, caplog):
    from test_mllp import sample_message

    admission = sample_message()
    unsupported = admission.replace("ADT^A01^ADT_A01", "ADT^A99^ADT_A01").replace("|3975|", "|3976|")
    bad_version = admission.replace("2.5^FRA^2.11", "9.9").replace("|3975|", "|3977|")
    with caplog.at_level("DEBUG", logger="sonco_fhir.connectors"):
        with connect(running.port) as client:
            codes = [exchange(client, message.encode())["MSA"][1] for message in (admission, unsupported, bad_version)]
        running.stop()

    assert codes == ["AA", "AR", "AR"]
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "3975" in logged
    assert "MLLP listener on" in logged
    assert "MLLP connection opened from" in logged
    # PID-3 (IPP, INS-NIR), PID-5 (name), PID-7 (birth date) and PID-11 (address) of the sample.
    for value in ("000003", "279035121518989", "PAT-TROIS", "DOMINIQUE", "19790328", "Breteuil", "75007"):
        assert value not in logged


# --- Every real sample over MLLP -------------------------------------------------------

SAMPLE_FOLDERS = ("hl7v2-ansforge-pamfr-cisis", "hl7v2-linuxforhealth-converter", "hl7v2-microsoft-fhir-converter")
# Samples the listener rejects, with the ERR-2 location of the reason.
REJECTED_SAMPLES = {
    # ACK^T10: an acknowledgement, which no mapping applies to.
    "CISIS_V2.1_MDM_ACK.er7": "MSH^1^9^1",
    # MSH-2 is ^~\\& with the escape character twice, so the separators are not distinct.
    "sample_unix.hl7": "MSH^1^2",
}


def real_samples() -> list:
    from conftest import CASES

    paths = [path for folder in SAMPLE_FOLDERS for path in sorted((CASES / folder).iterdir())]
    return [path for path in paths if path.suffix in (".hl7", ".er7")]


@pytest.mark.parametrize("path", real_samples(), ids=lambda path: path.name)
def test_real_sample_acknowledged(running, store, path):
    from sonco_fhir.connectors.hl7v2 import split_messages
    from sonco_fhir.connectors.mllp import ack_requested
    from sonco_fhir.connectors.store import read_header

    raw = path.read_bytes()
    text = raw.decode("utf-8") if b"\xef\xbb\xbf" in raw[:3] or raw.isascii() else raw.decode("latin-1")
    message = split_messages(text)[0][1]
    header = read_header(message)
    with connect(running.port) as client:
        client.sendall(START_BLOCK + message.encode("utf-8") + END_BLOCK)
        if path.name in REJECTED_SAMPLES:
            ack = read_frame(client)
            fields = {segment.split("|")[0]: segment.split("|") for segment in ack.split("\r") if segment}
            assert fields["MSA"][1] in ("AR", "CR")
            assert fields["ERR"][2] == REJECTED_SAMPLES[path.name]
            assert store.count() == 0
            assert len(store.rejections()) == 1
            return
        if ack_requested(header, "AA"):
            ack = read_frame(client)
            msa = ack.split("\r")[1].split(header.field_separator)
            assert msa[1] == ("CA" if header.field(15) or header.field(16) else "AA")
            assert msa[2] == header.control_id
        else:
            # MSH-15 NE: no accept acknowledgement. An original-mode message on the same connection
            # then gets the next ACK, which shows that the first one was processed.
            follow = exchange(client, minimal_message("AFTER-NE").encode())
            assert follow["MSA"][1:3] == ["AA", "AFTER-NE"]
    stored = store.pending()
    assert stored[0].control_id == header.control_id
    assert stored[0].sending_application == header.sending_application
