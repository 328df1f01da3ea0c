"""Durability of `sonco-fhir listen mllp --load` across a SIGKILL in the middle of a message stream.

A sender re-sends every message it got no AA for. After the listener is
killed and restarted on the same data folder, every acknowledged message
must be in HAPI exactly once.

NOTE: the kill falls inside the worker's pass over the acknowledged
messages, but whether it lands between a load into HAPI and the commit
that marks the message done depends on timing, so a run may not exercise
that window.
"""

import os
import secrets
import signal
import socket
import sqlite3
import subprocess
import sys
import time

import pytest

from sonco_fhir.canonical import PSEUDONYM_SYSTEM
from sonco_fhir.config import load_settings
from sonco_fhir.connectors.store import MessageStore, store_path
from sonco_fhir.loading.hapi import FhirServer
from sonco_fhir.pipeline import build_engine

from conftest import REPOSITORY
from test_mllp import connect, exchange, read_frame, sample_message
from test_mllp_worker import resource_ids, wait_for_port

MESSAGE_COUNT = 60
ACKS_BEFORE_KILL = 25
ACKED_DUPLICATES = 5
# The first listener is killed once its worker has loaded this many messages, so the kill
# falls inside a worker pass over the acknowledged messages.
LOADED_BEFORE_KILL = 5
DRAIN_WAIT_SECONDS = 60.0
STOP_WAIT_SECONDS = 30.0


def registration_message(number: int) -> str:
    """Build an ADT^A28 for patient `number` from the ANS admission sample, with its own MSH-10 and IPP, and no INS or visit."""
    segments = sample_message().split("\r")
    msh = segments[0].split("|")
    msh[8] = "ADT^A28^ADT_A05"
    msh[9] = f"DUR{number:05d}"
    pid = next(segment for segment in segments if segment.startswith("PID|")).split("|")
    pid[3] = f"{700000 + number:06d}^^^CHU-X&000897406&N^PI"
    pid[18] = ""
    evn = next(segment for segment in segments if segment.startswith("EVN|"))
    return "\r".join(["|".join(msh), evn, "|".join(pid)])


def start_listener(port: int, log_path) -> subprocess.Popen:
    """Start `listen mllp --load` in its own process group and wait until it accepts connections."""
    with open(log_path, "a") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "sonco_fhir.cli.main", "listen", "mllp", "--port", str(port), "--load"],
            stdout=log_file, stderr=subprocess.STDOUT, cwd=REPOSITORY, start_new_session=True,
        )
    wait_for_port(port, process, log_path)
    return process


def kill_group(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=STOP_WAIT_SECONDS)


def acknowledgement_code(client: socket.socket) -> str | None:
    """Read one ACK frame and return its MSA-1, or None when the connection ends first."""
    try:
        ack = read_frame(client)
    except OSError:
        return None
    segments = {segment.split("|")[0]: segment.split("|") for segment in ack.split("\r") if segment}
    return segments["MSA"][1]


def wait_for_loaded(store: MessageStore, minimum: int) -> int:
    """Poll the store until at least `minimum` messages are done, and return the count seen."""
    deadline = time.monotonic() + DRAIN_WAIT_SECONDS
    done = store.count("done")
    while done < minimum and time.monotonic() < deadline:
        time.sleep(0.02)
        done = store.count("done")
    return done


def wait_until_drained(store: MessageStore) -> bool:
    deadline = time.monotonic() + DRAIN_WAIT_SECONDS
    while time.monotonic() < deadline:
        if store.count("pending") == 0:
            return True
        time.sleep(0.2)
    return False


@pytest.mark.server
def test_sigkill_mid_stream_loads_once(tmp_path, monkeypatch, cohort_env):
    monkeypatch.setenv("SONCO_PSEUDONYM_KEY", "sonco-durability-test-" + secrets.token_hex(32))
    messages = [registration_message(number) for number in range(1, MESSAGE_COUNT + 1)]
    log_path = tmp_path / "listen.log"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    acknowledged: set[int] = set()

    # First listener: AA for the first messages, then SIGKILL right after a frame is sent,
    # before its ACK is read, while the worker is still loading earlier messages.
    process = start_listener(port, log_path)
    try:
        with connect(port) as client, MessageStore(store_path(load_settings().data_dir)) as observer:
            for index in range(ACKS_BEFORE_KILL):
                ack = exchange(client, messages[index].encode("utf-8"))
                assert ack["MSA"][1] == "AA", f"message {index}: {ack}"
                acknowledged.add(index)
            loaded_before_kill = wait_for_loaded(observer, LOADED_BEFORE_KILL)
            client.sendall(b"\x0b" + messages[ACKS_BEFORE_KILL].encode("utf-8") + b"\x1c\x0d")
            kill_group(process)
            if acknowledgement_code(client) == "AA":
                acknowledged.add(ACKS_BEFORE_KILL)
    finally:
        kill_group(process)
    killed_output = log_path.read_text()
    assert process.returncode == -signal.SIGKILL, killed_output
    assert LOADED_BEFORE_KILL <= loaded_before_kill < ACKS_BEFORE_KILL, (
        f"{loaded_before_kill} messages loaded when the kill was sent, so it did not fall inside"
        f" the worker pass: {killed_output}")

    # Second listener on the same data folder and port: the sender retries every message
    # without AA, and re-sends a few acknowledged ones as a sender does after a lost ACK.
    unacknowledged = [index for index in range(MESSAGE_COUNT) if index not in acknowledged]
    duplicates = sorted(acknowledged)[:ACKED_DUPLICATES]
    process = start_listener(port, log_path)
    try:
        with connect(port) as client:
            for index in unacknowledged + duplicates:
                ack = exchange(client, messages[index].encode("utf-8"))
                assert ack["MSA"][1] == "AA", f"message {index} after restart: {ack}"
                acknowledged.add(index)
        with MessageStore(store_path(load_settings().data_dir)) as observer:
            drained = wait_until_drained(observer)
            pending = observer.count("pending")
    finally:
        process.terminate()
        return_code = process.wait(timeout=STOP_WAIT_SECONDS)
    output = log_path.read_text()
    assert drained, f"{pending} message(s) still pending after {DRAIN_WAIT_SECONDS} s: {output}"
    assert return_code == 0, output
    assert acknowledged == set(range(MESSAGE_COUNT))

    # The store contains each (MSH-3, MSH-4, MSH-10) once, and every message loaded.
    with sqlite3.connect(f"file:{store_path(load_settings().data_dir)}?mode=ro", uri=True) as database:
        rows = database.execute(
            "SELECT sending_application, sending_facility, control_id, status FROM messages"
        ).fetchall()
    keys = [(application, facility, control_id) for application, facility, control_id, _ in rows]
    assert len(keys) == len(set(keys))
    assert sorted(control_id for _, _, control_id in keys) == [f"DUR{number:05d}" for number in range(1, MESSAGE_COUNT + 1)]
    statuses = {control_id: status for _, _, control_id, status in rows}
    assert [control_id for control_id, status in statuses.items() if status != "done"] == []

    # Each acknowledged message's Patient is in HAPI, and exactly one Patient carries its pseudonym.
    engine = build_engine(load_settings(), read_only=True)
    try:
        patient_ids = {index: resource_ids(engine, messages[index])["Patient"] for index in sorted(acknowledged)}
    finally:
        engine.crosswalk.close()
    assert len(set(patient_ids.values())) == MESSAGE_COUNT
    server = FhirServer(cohort_env)
    for index, patient_id in patient_ids.items():
        assert server.read("Patient", patient_id) is not None, f"message {index}: Patient/{patient_id} missing"
        carriers = list(server.search("Patient", {"identifier": f"{PSEUDONYM_SYSTEM}|{patient_id}"}))
        assert len(carriers) == 1, f"message {index}: {len(carriers)} Patients carry pseudonym {patient_id}"
