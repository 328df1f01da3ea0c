"""run_indicators on an in-memory search: rows, MeasureReports and the table's detail text, checked against compute.py."""

import pytest

from sonco_fhir import i18n
from sonco_fhir.cli.indicator_commands import _detail_text
from sonco_fhir.indicators.compute import ALL, delay_prescription_to_report, share_with_therapeutic_recommendation
from sonco_fhir.indicators.report import DELAY_MEASURE, SHARE_MEASURE, measure_report
from sonco_fhir.indicators.run import SEARCHES, run_indicators
from test_indicator_sql import InMemoryServer, care_plan, genomic_report, python_data, service_request


class RecordingServer(InMemoryServer):
    """InMemoryServer that records each search and each stored resource."""

    def __init__(self, resources):
        super().__init__(resources)
        self.searches = []
        self.stored = []

    def search(self, resource_type, params=None):
        self.searches.append((resource_type, dict(params or {})))
        return super().search(resource_type, params)

    def update(self, resource):
        self.stored.append(resource)


def cohort():
    return [
        service_request("a", "p1", "2024-01-10", "SeqOIA"),
        genomic_report("ra", "p1", "2024-01-10", "a"),  # 0 days
        service_request("b", "p2", "2024-01-10", "SeqOIA"),
        genomic_report("rb", "p2", "2024-01-11", "b"),  # 1 day
        service_request("c", "p3", "2024-01-10", "SeqOIA"),
        genomic_report("rc", "p3", "2024-01-12", "c"),  # 2 days
        service_request("d", "p4", "2024-01-10", "AURAGEN"),
        genomic_report("rd", "p4", "2024-01-13", "d"),  # 3 days
        service_request("e", "p5", None, "AURAGEN"),  # excluded: no authoredOn
        genomic_report("re", "p5", "2024-01-20", "e"),
        genomic_report("draft", "p1", "2024-02-01", "a", status="preliminary"),  # outside the period
        care_plan("c1", "p1", "targeted-therapy"),
        care_plan("c4", "p4", "clinical-trial"),
    ]


def rows_by_key(rows):
    return {(row.measure, row.stratum): row for row in rows}


def test_run_searches_keep_filters():
    server = RecordingServer(cohort())

    run_indicators(server, store=False)

    assert [resource_type for resource_type, _ in server.searches] == ["ServiceRequest", "DiagnosticReport", "CarePlan"]
    params = dict(server.searches)
    assert params["DiagnosticReport"]["code"] == "http://loinc.org|51969-4"
    assert params["CarePlan"]["category"].endswith("sonco-pathway-milestone|rcp-aval")
    assert set(params["DiagnosticReport"]["_elements"].split(",")) >= {"code", "status", "issued", "basedOn", "subject"}
    assert set(params["CarePlan"]["_elements"].split(",")) >= {"category", "activity", "subject"}
    assert set(params["ServiceRequest"]["_elements"].split(",")) >= {"authoredOn", "performer", "subject"}


def test_run_delay_rows_statistics():
    rows, _ = run_indicators(RecordingServer(cohort()), store=False)
    by_key = rows_by_key(rows)

    overall = by_key[(DELAY_MEASURE, ALL)]
    assert overall.value == 1.5  # delays 0, 1, 2, 3
    assert overall.denominator == 4
    assert overall.excluded == 1
    assert overall.p25 == pytest.approx(0.75)
    assert overall.p75 == pytest.approx(2.25)
    assert overall.p90 == pytest.approx(2.7)
    seqoia = by_key[(DELAY_MEASURE, "SeqOIA")]
    assert (seqoia.value, seqoia.p25, seqoia.p75) == (1, 0.5, 1.5)
    assert [row.stratum for row in rows if row.measure == DELAY_MEASURE] == [ALL, "AURAGEN", "SeqOIA"]


def test_run_share_rows():
    rows, _ = run_indicators(RecordingServer(cohort()), store=False)
    by_key = rows_by_key(rows)

    assert (by_key[(SHARE_MEASURE, ALL)].numerator, by_key[(SHARE_MEASURE, ALL)].denominator) == (2, 5)
    assert (by_key[(SHARE_MEASURE, "SeqOIA")].numerator, by_key[(SHARE_MEASURE, "SeqOIA")].denominator) == (1, 3)
    assert by_key[(SHARE_MEASURE, "AURAGEN")].value == 0.5
    assert by_key[(SHARE_MEASURE, ALL)].p25 is None


def test_run_reports_match_python_path():
    resources = cohort()
    server = RecordingServer(resources)

    _, reports = run_indicators(server, store=True)

    data = python_data(resources)
    period = ("2024-01-10", "2024-01-20")  # the preliminary report of 1 February is left out
    delay, share = reports
    assert delay["period"] == {"start": period[0], "end": period[1]}
    expected_delay = measure_report(DELAY_MEASURE, delay_prescription_to_report(data), period, delay["id"])
    expected_share = measure_report(SHARE_MEASURE, share_with_therapeutic_recommendation(data), period, share["id"])
    assert delay == expected_delay
    assert share == expected_share
    assert server.stored == reports


def test_run_empty_server():
    rows, reports = run_indicators(RecordingServer([]), store=False)

    assert [(row.measure, row.stratum, row.value, row.denominator) for row in rows] == [
        (DELAY_MEASURE, ALL, None, 0), (SHARE_MEASURE, ALL, None, 0)]
    assert reports[0]["period"] == {"start": "1970-01-01", "end": "1970-01-01"}
    assert "measureScore" not in reports[0]["group"][0]


@pytest.mark.parametrize(
    ("language", "expected"),
    [
        ("en", "4 request(s), 1 excluded for a missing date, quartiles 0.75–2.25 d, 90th percentile 2.7 d"),
        ("fr", "4 demande(s), 1 exclue(s) faute de date, quartiles 0,75–2,25 j, 90e centile 2,7 j"),
    ],
)
def test_delay_detail_text(language, expected):
    rows, _ = run_indicators(RecordingServer(cohort()), store=False)
    i18n.set_language(language)
    try:
        assert _detail_text(rows_by_key(rows)[(DELAY_MEASURE, ALL)]) == expected
    finally:
        i18n.set_language(None)


def test_searches_cover_view_resources():
    from sonco_fhir.indicators.sql import load_view_definitions

    assert {view["resource"] for view in load_view_definitions()} == set(SEARCHES)
