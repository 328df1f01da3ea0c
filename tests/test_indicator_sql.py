"""Indicators computed in DuckDB from the ViewDefinitions, checked against hand-computed values and against sonco_fhir.indicators.compute."""

import pytest

from sonco_fhir.indicators.compute import ALL, delay_prescription_to_report, share_with_therapeutic_recommendation
from sonco_fhir.indicators.extract import CohortData, extract
from sonco_fhir.indicators.sql import compute, load_views
from helpers import map_files
from conftest import REPOSITORY, TEST_KEY

CANONICAL_BASE = "https://sonco.example/fhir"
MILESTONE_SYSTEM = f"{CANONICAL_BASE}/CodeSystem/sonco-pathway-milestone"
RECOMMENDATION_SYSTEM = f"{CANONICAL_BASE}/CodeSystem/sonco-rcp-recommendation"
DELAY = "delay_prescription_to_report"
SHARE = "share_therapeutic_recommendation"


def service_request(request_id, patient, authored_on, lab):
    resource = {
        "resourceType": "ServiceRequest",
        "id": request_id,
        "status": "completed",
        "intent": "order",
        "subject": {"reference": f"Patient/{patient}"},
        "performer": [{"display": lab}],
    }
    if authored_on is not None:
        resource["authoredOn"] = authored_on
    return resource


def genomic_report(report_id, patient, issued, *request_ids, status="final", loinc="51969-4"):
    return {
        "resourceType": "DiagnosticReport",
        "id": report_id,
        "status": status,
        "code": {"coding": [{"system": "http://loinc.org", "code": loinc}]},
        "subject": {"reference": f"Patient/{patient}"},
        "issued": issued,
        "basedOn": [{"reference": f"ServiceRequest/{request_id}"} for request_id in request_ids],
    }


def care_plan(plan_id, patient, *recommendations, milestone="rcp-aval", system=RECOMMENDATION_SYSTEM):
    return {
        "resourceType": "CarePlan",
        "id": plan_id,
        "status": "active",
        "intent": "plan",
        "category": [{"coding": [{"system": MILESTONE_SYSTEM, "code": milestone}]}],
        "subject": {"reference": f"Patient/{patient}"},
        "created": "2024-06-01",
        "activity": [{"detail": {"status": "scheduled", "code": {"coding": [{"system": system, "code": code}]}}} for code in recommendations],
    }


class InMemoryServer:
    """Stand-in for FhirServer.search: filters by type and by the token parameters that extract() sends (`code`, `category`)."""

    TOKEN_ELEMENTS = {"code", "category"}

    def __init__(self, resources):
        self.resources = resources

    def search(self, resource_type, params=None):
        for resource in self.resources:
            if resource["resourceType"] == resource_type and self._matches(resource, params or {}):
                yield resource

    def _matches(self, resource, params):
        for name, value in params.items():
            if name not in self.TOKEN_ELEMENTS:
                continue  # _elements only trims the result
            system, code = value.split("|")
            element = resource.get(name) or []
            concepts = element if isinstance(element, list) else [element]
            codings = [coding for concept in concepts for coding in concept.get("coding", [])]
            if not any(coding.get("system") == system and coding.get("code") == code for coding in codings):
                return False
        return True


def sql_results(resources):
    by_type = {}
    for resource in resources:
        by_type.setdefault(resource["resourceType"], []).append(resource)
    return compute(load_views(by_type))


def python_data(resources) -> CohortData:
    return extract(InMemoryServer(resources))


def assert_same_as_python(resources, results):
    """Assert that the SQL results equal sonco_fhir.indicators.compute on the rows that extract() builds from the same resources."""
    data = python_data(resources)

    delays = delay_prescription_to_report(data)
    assert set(results[DELAY]) == set(delays)
    for stratum, expected in delays.items():
        row = results[DELAY][stratum]
        assert row["count"] == len(expected.delays), stratum
        assert row["median"] == expected.median, stratum
        assert row["excluded"] == expected.excluded, stratum

    shares = share_with_therapeutic_recommendation(data)
    assert set(results[SHARE]) == set(shares)
    for stratum, expected in shares.items():
        row = results[SHARE][stratum]
        assert (row["numerator"], row["denominator"]) == (expected.numerator, expected.denominator), stratum


def test_delay_cqm_median_example():
    # The CQM continuous-variable example: delays 0, 0, 1, 2, 3 have a median of 1.
    resources = [service_request(f"r{i}", f"p{i}", "2024-01-10", "SeqOIA") for i in range(5)]
    resources += [genomic_report(f"d{i}", f"p{i}", f"2024-01-{10 + days}", f"r{i}") for i, days in enumerate([0, 0, 1, 2, 3])]

    results = sql_results(resources)
    row = results[DELAY][ALL]

    assert row["count"] == 5
    assert row["median"] == 1
    assert row["p25"] == 0
    assert row["p75"] == 2
    assert row["p90"] == pytest.approx(2.6)  # 2 + 0.6 * (3 - 2), linear interpolation
    assert row["excluded"] == 0
    assert results[DELAY]["SeqOIA"] == row
    assert_same_as_python(resources, results)


def test_delay_strata_and_exclusions():
    resources = [
        service_request("a", "p1", "2024-03-01", "SeqOIA"),
        genomic_report("x", "p1", "2024-04-15T10:00:00+02:00", "a"),  # 45 days
        service_request("b", "p2", "2024-03-01", "AURAGEN"),
        genomic_report("y", "p2", "2024-03-31T23:30:00Z", "b"),  # 1 April in Paris: 31 days
        service_request("c", "p3", None, "AURAGEN"),  # authoredOn missing
        genomic_report("z", "p3", "2024-05-01", "c"),
        service_request("d", "p4", "2024-03", "AURAGEN"),  # known only to the month
        genomic_report("w", "p4", "2024-05-01", "d"),
        service_request("e", "p5", "2024-03-01", "SeqOIA"),
        genomic_report("v1", "p5", "2024-03-20", "e"),
        genomic_report("v2", "p5", "2024-03-10T09:00:00+01:00", "e"),  # the first report: 9 days
    ]

    results = sql_results(resources)

    assert results[DELAY]["SeqOIA"]["count"] == 2
    assert results[DELAY]["SeqOIA"]["median"] == 27  # (9 + 45) / 2
    assert results[DELAY]["SeqOIA"]["excluded"] == 0
    assert results[DELAY]["AURAGEN"]["count"] == 1
    assert results[DELAY]["AURAGEN"]["median"] == 31
    assert results[DELAY]["AURAGEN"]["excluded"] == 2
    assert results[DELAY][ALL]["count"] == 3
    assert results[DELAY][ALL]["median"] == 31
    assert results[DELAY][ALL]["excluded"] == 2
    assert_same_as_python(resources, results)


@pytest.mark.parametrize(
    ("authored_on", "issued", "days"),
    [
        ("2024-03-31", "2024-03-31T23:30:00Z", 1),  # 01:30 on 1 April, summer time
        ("2024-01-31", "2024-01-31T23:30:00Z", 1),  # 00:30 on 1 February, winter time
        ("2024-01-31", "2024-01-31T22:30:00Z", 0),  # 23:30 on 31 January
        ("2024-03-31T23:30:00Z", "2024-04-01", 0),  # authoredOn instant, report date-only
        ("2024-04-01T00:30:00+02:00", "2024-04-01T01:00:00-05:00", 0),  # 08:00 in Paris
        ("2024-04-01T08:00:00", "2024-04-02", 1),  # no offset: taken as written
    ],
)
def test_delay_paris_calendar_day(authored_on, issued, days):
    resources = [service_request("a", "p1", authored_on, "SeqOIA"), genomic_report("x", "p1", issued, "a")]

    results = sql_results(resources)

    assert results[DELAY][ALL]["count"] == 1
    assert results[DELAY][ALL]["median"] == days
    assert_same_as_python(resources, results)


def test_reports_outside_population_ignored():
    resources = [
        service_request("a", "p1", "2024-03-01", "SeqOIA"),
        genomic_report("x", "p1", "2024-03-05", "a"),
        genomic_report("hospital", "p2", "2024-03-02", "unknown"),  # no SONCO ServiceRequest
        genomic_report("draft", "p1", "2024-03-02", "a", status="preliminary"),
        genomic_report("other-code", "p1", "2024-03-02", "a", loinc="11526-1"),
    ]

    results = sql_results(resources)

    assert results[DELAY][ALL]["count"] == 1
    assert results[DELAY][ALL]["median"] == 4
    assert results[DELAY][ALL]["excluded"] == 0
    assert (results[SHARE][ALL]["numerator"], results[SHARE][ALL]["denominator"]) == (0, 1)
    assert_same_as_python(resources, results)


def test_empty_cohort():
    results = sql_results([])

    assert results[DELAY] == {ALL: {"count": 0, "median": None, "p25": None, "p75": None, "p90": None, "excluded": 0}}
    assert results[SHARE] == {ALL: {"numerator": 0, "denominator": 0}}
    assert_same_as_python([], results)


def test_share_counts_patients():
    resources = [
        service_request("a", "p1", "2024-01-01", "SeqOIA"),
        genomic_report("ra", "p1", "2024-02-01", "a"),
        care_plan("c1", "p1", "targeted-therapy"),
        service_request("b", "p2", "2024-01-01", "SeqOIA"),
        genomic_report("rb", "p2", "2024-02-01", "b"),
        care_plan("c2", "p2", "no-actionable-alteration"),
        service_request("c", "p3", "2024-01-01", "AURAGEN"),
        genomic_report("rc", "p3", "2024-02-01", "c"),
        care_plan("c3", "p3", "clinical-trial", "no-actionable-alteration"),
        # p4 has a recommendation but no report: outside the denominator.
        service_request("d", "p4", "2024-01-01", "AURAGEN"),
        care_plan("c4", "p4", "targeted-therapy"),
        # p5 has reports at both labs: once in each lab, once overall.
        service_request("e1", "p5", "2024-01-01", "SeqOIA"),
        service_request("e2", "p5", "2024-01-01", "AURAGEN"),
        genomic_report("re1", "p5", "2024-02-01", "e1"),
        genomic_report("re2", "p5", "2024-02-01", "e2"),
        care_plan("c5", "p5", "clinical-trial"),
        # p6's recommendations are outside an RCP d'aval or in another code system.
        service_request("f", "p6", "2024-01-01", "AURAGEN"),
        genomic_report("rf", "p6", "2024-02-01", "f"),
        care_plan("c6", "p6", "targeted-therapy", milestone="rcp-amont"),
        care_plan("c7", "p6", "targeted-therapy", system="http://example.org/other-system"),
    ]

    results = sql_results(resources)

    assert results[SHARE]["SeqOIA"] == {"numerator": 2, "denominator": 3}  # p1, p5 of p1, p2, p5
    assert results[SHARE]["AURAGEN"] == {"numerator": 2, "denominator": 3}  # p3, p5 of p3, p5, p6
    assert results[SHARE][ALL] == {"numerator": 3, "denominator": 5}
    assert_same_as_python(resources, results)


@pytest.fixture(scope="module")
def example_resources(tmp_path_factory):
    # Module fixtures run before the per-test environment, so they set the key themselves.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SONCO_PSEUDONYM_KEY", TEST_KEY)
        patch.setenv("SONCO_DATA_DIR", str(tmp_path_factory.mktemp("indicator-sql")))
        spice, _ = map_files("spice", REPOSITORY / "examples" / "spice")
        hygen, _ = map_files("hygen", REPOSITORY / "examples" / "hygen")
    return spice + hygen


def test_examples_delay(example_resources):
    # Delays computed by hand from the exports are 78, 98 and 126 days at SeqOIA, and 69, 71, 84, 85 and 87 at AURAGEN.
    results = sql_results(example_resources)

    assert results[DELAY]["SeqOIA"]["count"] == 3
    assert results[DELAY]["SeqOIA"]["median"] == 98
    assert results[DELAY]["AURAGEN"]["count"] == 5
    assert results[DELAY]["AURAGEN"]["median"] == 84
    assert results[DELAY][ALL]["count"] == 8
    assert results[DELAY][ALL]["median"] == 84.5
    assert results[DELAY][ALL]["excluded"] == 0
    assert_same_as_python(example_resources, results)


def test_examples_share(example_resources):
    results = sql_results(example_resources)

    assert results[SHARE]["SeqOIA"] == {"numerator": 2, "denominator": 3}
    assert results[SHARE]["AURAGEN"] == {"numerator": 2, "denominator": 4}
    assert results[SHARE][ALL] == {"numerator": 4, "denominator": 7}
    assert_same_as_python(example_resources, results)
