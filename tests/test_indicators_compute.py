"""Indicator arithmetic on hand-built rows, without a server."""

from sonco_fhir.indicators.compute import (
    ALL,
    delay_prescription_to_report,
    paris_date,
    share_with_therapeutic_recommendation,
)
from sonco_fhir.indicators.extract import CohortData
from sonco_fhir.indicators.report import DELAY_MEASURE, SHARE_MEASURE, measure_report


def cohort(requests, reports, plans=()):
    data = CohortData()
    for request_id, patient, authored, lab in requests:
        data.requests[f"ServiceRequest/{request_id}"] = {"id": request_id, "patient": patient, "authored_on": authored, "lab": lab}
    for report_id, patient, issued, request_id in reports:
        data.reports.append({"id": report_id, "patient": patient, "issued": issued, "requests": [f"ServiceRequest/{request_id}"]})
    for patient, codes in plans:
        data.care_plans.append({"id": patient, "patient": patient, "created": None, "recommendations": set(codes)})
    return data


def test_cqm_median_example():
    # Observations 0, 0, 1, 2, 3 give a median of 1.
    data = cohort(
        [(f"r{i}", f"p{i}", "2024-01-10", "SeqOIA") for i in range(5)],
        [(f"d{i}", f"p{i}", f"2024-01-{10 + days}", f"r{i}") for i, days in enumerate([0, 0, 1, 2, 3])],
    )

    result = delay_prescription_to_report(data)[ALL]

    assert sorted(result.delays) == [0, 0, 1, 2, 3]
    assert result.median == 1


def test_delay_per_lab_and_missing_dates():
    data = cohort(
        [("a", "p1", "2024-03-01", "SeqOIA"), ("b", "p2", "2024-03-01", "AURAGEN"), ("c", "p3", None, "AURAGEN")],
        [("x", "p1", "2024-04-15T10:00:00+02:00", "a"), ("y", "p2", "2024-03-31T23:30:00+00:00", "b"), ("z", "p3", "2024-05-01", "c")],
    )

    results = delay_prescription_to_report(data)

    assert results["SeqOIA"].delays == [45]
    # 23:30 UTC on 31 March is 01:30 on 1 April in Paris (summer time since 31 March 02:00).
    assert results["AURAGEN"].delays == [31]
    assert results["AURAGEN"].excluded == 1
    assert results[ALL].median == 38


def test_first_report_counts():
    data = cohort([("a", "p1", "2024-03-01", "SeqOIA")], [("x", "p1", "2024-03-20", "a"), ("y", "p1", "2024-03-10", "a")])

    assert delay_prescription_to_report(data)["SeqOIA"].delays == [9]


def test_report_without_prescription_ignored():
    data = cohort([], [("x", "p1", "2024-03-20", "unknown")])

    assert delay_prescription_to_report(data)[ALL].delays == []
    assert share_with_therapeutic_recommendation(data)[ALL].denominator == 0


def test_share_counts_patients():
    data = cohort(
        [("a", "p1", "2024-01-01", "SeqOIA"), ("b", "p2", "2024-01-01", "SeqOIA"), ("c", "p3", "2024-01-01", "AURAGEN"), ("d", "p4", "2024-01-01", "AURAGEN")],
        [("x", "p1", "2024-02-01", "a"), ("y", "p2", "2024-02-01", "b"), ("z", "p3", "2024-02-01", "c")],
        [("p1", ["targeted-therapy"]), ("p2", ["no-actionable-alteration"]), ("p3", ["clinical-trial"]), ("p4", ["targeted-therapy"])],
    )

    results = share_with_therapeutic_recommendation(data)

    assert (results[ALL].numerator, results[ALL].denominator) == (2, 3)  # p4 has no report
    assert (results["SeqOIA"].numerator, results["SeqOIA"].denominator) == (1, 2)
    assert (results["AURAGEN"].numerator, results["AURAGEN"].denominator) == (1, 1)


def test_paris_date_forms():
    assert paris_date("2024-10-27").isoformat() == "2024-10-27"
    assert paris_date("2024-10-26T22:30:00Z").isoformat() == "2024-10-27"  # 00:30 CEST
    assert paris_date("2024-01-31T23:30:00Z").isoformat() == "2024-02-01"  # 00:30 CET
    assert paris_date("2024-05") is None


def test_measure_report_shape():
    data = cohort([("a", "p1", "2024-03-01", "SeqOIA")], [("x", "p1", "2024-03-11", "a")], [("p1", ["clinical-trial"])])

    delay = measure_report(DELAY_MEASURE, delay_prescription_to_report(data), ("2024-03-01", "2024-03-11"), "d1")
    share = measure_report(SHARE_MEASURE, share_with_therapeutic_recommendation(data), ("2024-03-01", "2024-03-11"), "s1")

    assert delay["type"] == "summary"
    assert delay["group"][0]["measureScore"] == {"value": 10, "unit": "d", "system": "http://unitsofmeasure.org", "code": "d"}
    stratum = delay["group"][0]["stratifier"][0]["stratum"][0]
    assert stratum["value"]["text"] == "SeqOIA"
    assert share["group"][0]["measureScore"] == {"value": 1.0}
    counts = {p["code"]["coding"][0]["code"]: p["count"] for p in share["group"][0]["population"]}
    assert counts == {"initial-population": 1, "denominator": 1, "numerator": 1}
