"""Cohort filter: messages about patients outside the cohort file are acknowledged, counted and not stored."""

import os

import pytest

from sonco_fhir.connectors.cohort import CohortFile

from test_mllp import RunningListener, sample_message, send, store  # noqa: F401 (store is a fixture)


def message_for(control_id: str, pid3: str) -> str:
    msh = f"MSH|^~\\&|LAB|SITE|SONCO|SONCO|20240306111154||ADT^A08^ADT_A01|{control_id}|P|2.5"
    return msh + f"\rEVN||20240306111154\rPID|1||{pid3}"


@pytest.fixture
def cohort_file(tmp_path):
    path = tmp_path / "cohort.txt"
    # The ANS admission sample's IPP under its authority's OID, and a bare value under any authority.
    path.write_text("# SONCO cohort\n000003^000897406\n\n555^\nIPP-77\n", encoding="utf-8")
    return path


def test_cohort_file_matching(cohort_file):
    cohort = CohortFile(cohort_file)

    def record(identifiers):
        return type("Record", (), {"data": {"PID": {"3[]": identifiers}}})()

    assert len(cohort) == 3
    assert cohort(record([{"1": "000003", "4.1": "CHU-X", "4.2": "000897406"}]))
    assert cohort(record([{"1": "000003", "4.1": "000897406"}]))
    assert not cohort(record([{"1": "000003", "4.1": "CHU-Y", "4.2": "1.2.3"}]))
    assert cohort(record([{"1": "IPP-77", "4.1": "ANY"}]))
    assert cohort(record([{"1": "999"}, {"1": "IPP-77"}]))
    # "555^" has an empty authority, so it matches under any authority.
    assert cohort(record([{"1": "555", "4.1": "X"}]))
    assert not cohort(record([{"1": "556", "4.1": "X"}]))
    # A message without PID-3 is kept: nothing places it outside the cohort.
    assert cohort(record([]))


def test_listener_drops_outside_cohort(store, cohort_file):
    running = RunningListener(store, in_cohort=CohortFile(cohort_file))
    try:
        inside = send(running.port, sample_message().encode())
        outside = send(running.port, message_for("OUT-1", "123^^^SITE^PI").encode())
        outside_again = send(running.port, message_for("OUT-1", "123^^^SITE^PI").encode())
        bare = send(running.port, message_for("IN-2", "456^^^SITE^PI~IPP-77^^^OTHER^PI").encode())
        counts = dict(running.listener.counts)
    finally:
        running.stop()

    assert inside["MSA"][1:3] == ["AA", "3975"]
    assert outside["MSA"][1:3] == ["AA", "OUT-1"]
    assert outside_again["MSA"][1:3] == ["AA", "OUT-1"]
    assert bare["MSA"][1:3] == ["AA", "IN-2"]
    assert [row.control_id for row in store.pending()] == ["3975", "IN-2"]
    assert counts["outside_cohort"] == 2
    assert counts["stored"] == 2


def test_cohort_file_reloaded_when_changed(store, cohort_file):
    cohort = CohortFile(cohort_file)
    running = RunningListener(store, in_cohort=cohort)
    try:
        before = send(running.port, message_for("NEW-1", "123^^^SITE^PI").encode())
        cohort_file.write_text("123^SITE\n", encoding="utf-8")
        # Make sure the modification time differs even on a coarse clock.
        stat = os.stat(cohort_file)
        os.utime(cohort_file, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
        after = send(running.port, message_for("NEW-2", "123^^^SITE^PI").encode())
    finally:
        running.stop()

    assert before["MSA"][1] == "AA"
    assert after["MSA"][1] == "AA"
    assert [row.control_id for row in store.pending()] == ["NEW-2"]
    assert len(cohort) == 1
