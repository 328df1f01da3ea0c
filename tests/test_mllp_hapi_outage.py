"""`sonco-fhir listen mllp --load` while its HAPI FHIR server stops and starts again in the middle of a stream.

This module starts its own HAPI server (own data folder, own free port)
instead of the session one, because the test stops it. A sender streams
messages over a real MLLP socket before, during and after the outage.
Every acknowledged message must end up in HAPI exactly once.
"""

import dataclasses
import secrets
import signal
import subprocess
import sys
import threading
import time

import pytest

from sonco_fhir.canonical import PSEUDONYM_SYSTEM
from sonco_fhir.config import load_settings
from sonco_fhir.connectors.store import MessageStore, store_path
from sonco_fhir.loading.hapi import FhirServer
from sonco_fhir.pipeline import build_engine
from sonco_fhir.server.manage import START_TIMEOUT_SECONDS, start_server, stop_server

from conftest import REPOSITORY
from test_mllp import connect, exchange
from test_mllp_durability import registration_message
from test_mllp_worker import free_port, resource_ids, wait_for_port

MESSAGES_BEFORE_STOP = 15
MESSAGES_WHILE_DOWN = 15
MESSAGES_WHILE_STARTING = 10
LOADED_BEFORE_STOP = 5
# The worker's delay between attempts doubles up to this cap, so it notices the restart quickly.
RETRY_MAX_SECONDS = 2
DRAIN_WAIT_SECONDS = 300.0
STOP_WAIT_SECONDS = 30.0


@pytest.fixture
def own_hapi(tmp_path, monkeypatch):
    """Settings of a HAPI server started for this test only, stopped at the end whatever happens."""
    port = free_port()
    settings = dataclasses.replace(
        load_settings(), data_dir=tmp_path / "hapi", server_port=port, fhir_url=f"http://127.0.0.1:{port}/fhir",
    )
    start_server(settings)
    monkeypatch.setenv("SONCO_FHIR_URL", settings.fhir_url)
    try:
        yield settings
    finally:
        stop_server(settings)


def start_listener(port: int, log_path) -> subprocess.Popen:
    with open(log_path, "a") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "sonco_fhir.cli.main", "listen", "mllp", "--port", str(port), "--load",
             "--retry-max", str(RETRY_MAX_SECONDS)],
            stdout=log_file, stderr=subprocess.STDOUT, cwd=REPOSITORY, start_new_session=True,
        )
    wait_for_port(port, process, log_path)
    return process


def wait_until(condition, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return False


@pytest.mark.server
def test_hapi_outage_loses_nothing(tmp_path, monkeypatch, own_hapi):
    monkeypatch.setenv("SONCO_PSEUDONYM_KEY", "sonco-outage-test-" + secrets.token_hex(32))
    total = MESSAGES_BEFORE_STOP + MESSAGES_WHILE_DOWN + MESSAGES_WHILE_STARTING
    messages = [registration_message(number) for number in range(1, total + 1)]
    log_path = tmp_path / "listen.log"
    listener_port = free_port()
    acknowledged: list[int] = []
    pending_while_down = 0
    restarted = threading.Event()
    restart_errors: list[Exception] = []

    def restart_hapi() -> None:
        try:
            start_server(own_hapi)
        except Exception as error:  # noqa: BLE001 - reported by the assert below
            restart_errors.append(error)
            return
        restarted.set()

    process = start_listener(listener_port, log_path)
    restart: threading.Thread | None = None
    try:
        with connect(listener_port) as client, MessageStore(store_path(load_settings().data_dir)) as observer:
            for index in range(MESSAGES_BEFORE_STOP):
                assert exchange(client, messages[index].encode())["MSA"][1:3] == ["AA", f"DUR{index + 1:05d}"]
                acknowledged.append(index)
            assert wait_until(lambda: observer.count("done") >= LOADED_BEFORE_STOP, 60), log_path.read_text()

            stop_server(own_hapi)
            assert not FhirServer(own_hapi.fhir_url).is_up()
            for index in range(MESSAGES_BEFORE_STOP, MESSAGES_BEFORE_STOP + MESSAGES_WHILE_DOWN):
                assert exchange(client, messages[index].encode())["MSA"][1:3] == ["AA", f"DUR{index + 1:05d}"]
                acknowledged.append(index)
            # The worker tries at least once more while the server is down.
            assert wait_until(lambda: "retry 2 of the pending" in log_path.read_text(), 30), log_path.read_text()
            pending_while_down = observer.count("pending")

            restart = threading.Thread(target=restart_hapi, daemon=True)
            restart.start()
            for index in range(MESSAGES_BEFORE_STOP + MESSAGES_WHILE_DOWN, total):
                assert exchange(client, messages[index].encode())["MSA"][1:3] == ["AA", f"DUR{index + 1:05d}"]
                acknowledged.append(index)
            restart.join(timeout=START_TIMEOUT_SECONDS + 60)
            assert restarted.is_set(), f"HAPI did not start again: {restart_errors}"
            drained = wait_until(lambda: observer.count("done") == total, DRAIN_WAIT_SECONDS)
            statuses = {status: observer.count(status) for status in ("pending", "done", "error")}
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        return_code = process.wait(timeout=STOP_WAIT_SECONDS + 60)
        if restart is not None:
            restart.join(timeout=START_TIMEOUT_SECONDS + 60)
    output = log_path.read_text()

    assert drained, f"not all loaded after the restart: {statuses}\n{output}"
    assert return_code == 0, output
    assert statuses == {"pending": 0, "done": total, "error": 0}
    assert pending_while_down >= MESSAGES_WHILE_DOWN, output
    assert acknowledged == list(range(total))
    assert "FHIR server reachable again" in output

    # Each acknowledged message's Patient is in HAPI, and exactly one Patient carries its pseudonym.
    engine = build_engine(load_settings(), read_only=True)
    try:
        patient_ids = [resource_ids(engine, messages[index])["Patient"] for index in acknowledged]
    finally:
        engine.crosswalk.close()
    assert len(set(patient_ids)) == total
    server = FhirServer(own_hapi.fhir_url)
    for index, patient_id in zip(acknowledged, patient_ids):
        assert server.read("Patient", patient_id) is not None, f"message {index}: Patient/{patient_id} missing"
        carriers = list(server.search("Patient", {"identifier": f"{PSEUDONYM_SYSTEM}|{patient_id}"}))
        assert len(carriers) == 1, f"message {index}: {len(carriers)} Patients carry pseudonym {patient_id}"
    all_patients = list(server.search("Patient", {"_count": "200"}))
    assert len(all_patients) == total
