"""Loading of stored HL7 v2 messages into HAPI FHIR: worker, `errors` commands, listener with --load.

Each test uses its own pseudonymisation key, so the resource ids it
creates are new in the session's HAPI server even when other tests loaded
the same example messages.
"""

import secrets
import socket
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from sonco_fhir import i18n
from sonco_fhir.cli.main import build_app
from sonco_fhir.config import load_settings
from sonco_fhir.connectors.hl7v2 import message_record, message_records
from sonco_fhir.connectors.store import MessageStore, patient_key, store_path
from sonco_fhir.connectors.worker import Backoff, LoadingThread, count_held, process_pending
from sonco_fhir.errors import Problem, ServerError
from sonco_fhir.loading.hapi import FhirServer
from sonco_fhir.pipeline import build_engine

from conftest import CASES, REPOSITORY
from test_mllp import RunningListener, sample_message, send

ORU_GENOMIC = REPOSITORY / "examples" / "hl7v2" / "ORU_R01_genomic_NB6TK328.hl7"
OML_O21 = CASES / "hl7v2-microsoft-fhir-converter" / "OML-O21-01.hl7"
LOAD_WAIT_SECONDS = 30.0


def unmapped_message() -> str:
    """The Microsoft OML^O21 sample relabelled with a message type that no mapping file applies to."""
    return cr_text(OML_O21).replace("|OML^O21^OML_O21|", "|ZZZ^Z99^ZZZ_Z99|", 1)


def cr_text(path) -> str:
    """A message file's text with CR segment separators, as the listener stores it."""
    text = path.read_text(encoding="utf-8").lstrip("\ufeff")
    return "\r".join(line for line in text.splitlines() if line.strip())


def resource_ids(engine, text: str) -> dict[str, str]:
    """Map a message as the worker does and return the id of its first resource of each type."""
    mapped = engine.map_record(message_record("mllp", 1, text, 1))
    assert mapped.problems == []
    ids: dict[str, str] = {}
    for resource in mapped.resources:
        ids.setdefault(resource["resourceType"], resource["id"])
    return ids


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(autouse=True)
def fresh_key(monkeypatch):
    monkeypatch.setenv("SONCO_PSEUDONYM_KEY", "sonco-worker-test-" + secrets.token_hex(32))


@pytest.fixture
def store():
    with MessageStore(store_path(load_settings().data_dir)) as opened:
        yield opened


@pytest.fixture
def engine():
    built = build_engine(load_settings(), read_only=False)
    yield built
    built.crosswalk.close()


@pytest.mark.server
def test_adt_and_oru_loaded(store, engine, cohort_env):
    server = FhirServer(cohort_env)
    adt_id, _ = store.accept(sample_message())
    oru_id, _ = store.accept(cr_text(ORU_GENOMIC))

    counts = process_pending(store, engine, server)

    assert (counts.done, counts.errors, counts.server_unreachable) == (2, 0, False)
    assert store.get(adt_id).status == "done"
    assert store.get(oru_id).status == "done"
    assert store.get(oru_id).attempts == 1
    adt_ids = resource_ids(engine, sample_message())
    oru_ids = resource_ids(engine, cr_text(ORU_GENOMIC))
    assert server.read("Patient", adt_ids["Patient"]) is not None
    report = server.read("DiagnosticReport", oru_ids["DiagnosticReport"])
    assert report is not None
    codes = [coding.get("code") for coding in report["code"]["coding"]]
    assert "51969-4" in codes
    found = {resource["id"] for resource in server.search("DiagnosticReport", {"code": "http://loinc.org|51969-4"})}
    assert oru_ids["DiagnosticReport"] in found


@pytest.mark.server
def test_unreachable_server_keeps_pending(store, engine, cohort_env):
    message_id, _ = store.accept(sample_message())
    unreachable = FhirServer(f"http://127.0.0.1:{free_port()}/fhir")

    first = process_pending(store, engine, unreachable)
    second = process_pending(store, engine, unreachable)

    assert first.server_unreachable and second.server_unreachable
    assert (second.done, second.errors) == (0, 0)
    stored = store.get(message_id)
    assert stored.status == "pending"
    assert stored.attempts == 2
    assert store.errors() == []

    counts = process_pending(store, engine, FhirServer(cohort_env))

    assert counts.done == 1
    stored = store.get(message_id)
    assert (stored.status, stored.attempts, stored.last_error) == ("done", 3, None)
    assert FhirServer(cohort_env).read("Patient", resource_ids(engine, sample_message())["Patient"]) is not None


def test_unreachable_stops_pass_in_order(store, engine):
    first_id, _ = store.accept(sample_message())
    second_id, _ = store.accept(cr_text(ORU_GENOMIC))
    unreachable = FhirServer(f"http://127.0.0.1:{free_port()}/fhir")

    counts = process_pending(store, engine, unreachable)

    assert counts.server_unreachable
    assert store.get(first_id).attempts == 1
    assert store.get(second_id).attempts == 0
    assert [message.id for message in store.pending()] == [first_id, second_id]


def test_run_worker_backs_off_and_stops(store, monkeypatch, caplog):
    store.accept(sample_message())
    monkeypatch.setenv("SONCO_FHIR_URL", f"http://127.0.0.1:{free_port()}/fhir")
    worker = LoadingThread(store, Backoff(initial=0.05, maximum=0.2, poll_interval=0.05))

    with caplog.at_level("INFO", logger="sonco_fhir.connectors.worker"):
        worker.start()
        time.sleep(1.0)
        worker.stop()

    messages = [record.getMessage() for record in caplog.records]
    retries = [message for message in messages if message.startswith("retry ")]
    # Delays of 0.05, 0.1, 0.2, 0.2 ... seconds fit well over 3 retries in one second.
    assert len(retries) >= 3
    assert "retry 3 of the pending HL7 v2 messages in 0.2 s" in messages
    assert messages[-1] == "HL7 v2 loading worker stopped"
    assert store.count("pending") == 1
    assert store.pending()[0].attempts == len(retries)


def test_unsupported_message_errors_then_replays(store, engine, monkeypatch):
    # No server is needed: the message fails at mapping, before any request.
    monkeypatch.setenv("SONCO_FHIR_URL", f"http://127.0.0.1:{free_port()}/fhir")
    message_id, _ = store.accept(unmapped_message())

    counts = process_pending(store, engine, FhirServer(load_settings().fhir_url))

    assert (counts.done, counts.errors) == (0, 1)
    stored = store.get(message_id)
    assert stored.status == "error"
    assert "ZZZ" in stored.last_error
    assert stored.error_location == f"message enregistré n° {message_id}"
    assert stored.attempts == 1

    runner = CliRunner()
    listed = runner.invoke(build_app(), ["errors", "list"])
    assert listed.exit_code == 0, listed.output
    assert str(message_id) in listed.output
    assert "ORDApp" in listed.output
    assert "PATID1234" not in listed.output

    shown = runner.invoke(build_app(), ["errors", "show", str(message_id)])
    assert shown.exit_code == 0, shown.output
    assert "Tentatives: 1" in shown.output
    assert "PATID1234" not in shown.output
    shown_raw = runner.invoke(build_app(), ["errors", "show", str(message_id), "--raw"])
    assert "PATID1234" in shown_raw.output

    replayed = runner.invoke(build_app(), ["errors", "replay", str(message_id)])
    assert replayed.exit_code == 0, replayed.output
    assert store.get(message_id).status == "pending"
    assert store.errors() == []


def test_errors_commands_in_english(store, engine):
    # The stored reason and location are in the language of the process that handled the message.
    i18n.set_language("en")
    message_id, _ = store.accept(unmapped_message())
    process_pending(store, engine, FhirServer(f"http://127.0.0.1:{free_port()}/fhir"))
    runner = CliRunner()

    shown = runner.invoke(build_app(), ["--lang", "en", "errors", "show", str(message_id)])
    missing = runner.invoke(build_app(), ["--lang", "en", "errors", "show", "999"])
    no_target = runner.invoke(build_app(), ["--lang", "en", "errors", "replay"])

    assert shown.exit_code == 0, shown.output
    assert "Attempts: 1" in shown.output
    assert f"stored message {message_id}" in shown.output
    assert missing.exit_code == 2
    assert "no stored message with id 999" in missing.output
    assert no_target.exit_code == 2
    assert "--all" in no_target.output


@pytest.mark.server
def test_replay_all_now_loads(store, engine, cohort_env):
    message_id, _ = store.accept(sample_message())
    store.mark_error(message_id, "test reason", "")

    result = CliRunner().invoke(build_app(), ["errors", "replay", "--all", "--now"])

    assert result.exit_code == 0, result.output
    assert store.get(message_id).status == "done"


@pytest.mark.server
def test_listener_with_worker_loads_patient(store, cohort_env):
    server = FhirServer(cohort_env)
    worker = LoadingThread(store, Backoff(initial=0.1, maximum=1.0, poll_interval=0.1))
    worker.start()
    listener = RunningListener(store, read_timeout=5.0)
    try:
        ack = send(listener.port, sample_message().encode("utf-8"))
        assert ack["MSA"][1:3] == ["AA", "3975"]
        found = wait_for_done(store)
    finally:
        listener.stop()
        worker.stop()

    assert found
    engine = build_engine(load_settings(), read_only=False)
    try:
        patient_id = resource_ids(engine, sample_message())["Patient"]
    finally:
        engine.crosswalk.close()
    assert server.read("Patient", patient_id) is not None


@pytest.mark.server
def test_listen_command_loads_patient(tmp_path, cohort_env):
    port = free_port()
    log_path = tmp_path / "listen.log"
    with open(log_path, "w") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "sonco_fhir.cli.main", "listen", "mllp", "--port", str(port), "--load"],
            stdout=log_file, stderr=subprocess.STDOUT, cwd=REPOSITORY,
        )
    try:
        wait_for_port(port, process, log_path)
        ack = send(port, sample_message().encode("utf-8"))
        assert ack["MSA"][1] == "AA"
        with MessageStore(store_path(load_settings().data_dir)) as observer:
            found = wait_for_done(observer)
    finally:
        process.terminate()
        return_code = process.wait(timeout=30)

    output = log_path.read_text()
    assert found, output
    assert return_code == 0, output
    assert "HL7 v2 loading worker stopped" in output
    engine = build_engine(load_settings(), read_only=True)
    try:
        patient_id = resource_ids(engine, sample_message())["Patient"]
    finally:
        engine.crosswalk.close()
    assert FhirServer(cohort_env).read("Patient", patient_id) is not None


def wait_for_done(store: MessageStore) -> bool:
    deadline = time.monotonic() + LOAD_WAIT_SECONDS
    while time.monotonic() < deadline:
        if store.count("done") == 1:
            return True
        time.sleep(0.2)
    return False


def wait_for_port(port: int, process: subprocess.Popen, log_path) -> None:
    deadline = time.monotonic() + LOAD_WAIT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"listener exited with {process.returncode}: {log_path.read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"listener not listening on port {port} after {LOAD_WAIT_SECONDS} s")


def patient_message(control_id: str, ipp: int) -> str:
    """An ADT^A28 from the ANS admission sample with its own MSH-10 and IPP, and no INS or visit."""
    segments = sample_message().split("\r")
    msh = segments[0].split("|")
    msh[8] = "ADT^A28^ADT_A05"
    msh[9] = control_id
    pid = next(segment for segment in segments if segment.startswith("PID|")).split("|")
    pid[3] = f"{ipp}^^^CHU-X&000897406&N^PI"
    pid[18] = ""
    evn = next(segment for segment in segments if segment.startswith("EVN|"))
    return "\r".join(["|".join(msh), evn, "|".join(pid)])


class FailingEngine:
    """The real engine, except that mapping fails for the control ids in `failing`; records the mapping order."""

    def __init__(self, engine, failing: set[str]):
        self.engine = engine
        self.failing = failing
        self.mapped: list[str] = []

    def map_record(self, record):
        control_id = record.data["MSH"]["10"]
        self.mapped.append(control_id)
        result = self.engine.map_record(record)
        if control_id in self.failing:
            result.problems.append(Problem(record.origin, record.position, "mapping failure made by the test"))
        return result


@pytest.mark.server
def test_patient_order_kept_after_failure(store, engine, cohort_env):
    patient_a, patient_b = 810001, 810002
    order = [("A1", patient_a), ("A2", patient_a), ("B1", patient_b), ("A3", patient_a), ("B2", patient_b)]
    ids = {control_id: store.accept(patient_message(control_id, ipp))[0] for control_id, ipp in order}
    failing = FailingEngine(engine, {"A1"})
    server = FhirServer(cohort_env)

    counts = process_pending(store, failing, server)

    assert (counts.done, counts.errors, counts.held) == (2, 1, 2)
    assert failing.mapped == ["A1", "B1", "B2"]
    assert {control_id: store.get(ids[control_id]).status for control_id, _ in order} == {
        "A1": "error", "A2": "pending", "B1": "done", "A3": "pending", "B2": "done",
    }
    assert count_held(store) == 2
    listed = CliRunner().invoke(build_app(), ["--lang", "en", "errors", "list"])
    assert "2 pending message(s) wait behind an earlier message in error of the same patient" in listed.output

    # A later pass still keeps A2 and A3 waiting, and loads nothing out of order.
    again = process_pending(store, failing, server)
    assert (again.done, again.errors, again.held) == (0, 0, 2)

    # After the mapping fix and a replay, a new store connection (as after a restart) resumes in order.
    failing.failing.clear()
    failing.mapped.clear()
    store.reset_for_replay(ids["A1"])
    with MessageStore(store.path) as reopened:
        resumed = process_pending(reopened, failing, server)
    assert (resumed.done, resumed.errors, resumed.held) == (3, 0, 0)
    assert failing.mapped == ["A1", "A2", "A3"]
    assert store.count("done") == 5
    assert server.read("Patient", resource_ids(engine, patient_message("A3", patient_a))["Patient"]) is not None


def test_patient_key_prefers_ipp():
    message = patient_message("K1", 810003).replace(
        "810003^^^CHU-X&000897406&N^PI", "1234567890123^^^ASIP-SANTE-INS-NIR&1.2.250.1.213.1.4.8&ISO^INS~810003^^^CHU-X&000897406&N^PI")

    assert patient_key(message) == "810003^CHU-X^000897406"
    assert patient_key(minimal_message_without_pid()) is None


def minimal_message_without_pid() -> str:
    return "MSH|^~\\&|LAB|SITE|SONCO|SONCO|20240306111154||ORU^R01|NP-1|P|2.5\rOBR|1"


@pytest.mark.server
def test_two_pair_merge_loads_both(store, engine, cohort_env):
    # The Microsoft ADT^A40 sample merges two pairs of patients in one message.
    text = cr_text(CASES / "hl7v2-microsoft-fhir-converter" / "ADT-A40-02.hl7")
    message_id, _ = store.accept(text)

    counts = process_pending(store, engine, FhirServer(cohort_env))

    assert (counts.done, counts.errors) == (1, 0), store.get(message_id).last_error
    records = message_records("mllp", 1, text, 1)
    assert len(records) == 2
    server = FhirServer(cohort_env)
    for record in records:
        mapped = engine.map_record(record)
        assert mapped.problems == []
        assert server.read("Patient", mapped.patient_id) is not None
