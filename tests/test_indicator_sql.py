"""Every indicator of the catalogue computed in DuckDB from the ViewDefinitions, on a small cohort with hand-computed values.

The cohort (function `cohort`) has six patients and seven prescriptions:

- r1, p1, SeqOIA, pancreatic-cancer, CHU A: prescribed 2024-01-10, validated
  2024-01-15, frozen tumour sample (60 % cellularity) received 2024-01-20, sequencing done
  2024-02-19, report 2024-02-29 (actionable: an implication derived from a
  result), RCP d'aval 2024-03-10 naming the report (osimertinib, trial),
  osimertinib started 2024-03-20 after carboplatin from 2023-11-01.
- r2, p2, SeqOIA, cholangiocarcinoma, CHU B: prescribed 2024-03-30 (date
  only), validated 2024-03-31T23:30Z (01:30 on 1 April in Paris, summer time
  since 31 March), FFPE sample (15 %) received 2024-04-01T00:30+02:00 (same day),
  second FFPE sample (20 %) 2024-04-10, amended report 2024-04-30, RCP d'aval
  2024-05-02 (no actionable alteration, oncogenetics referral), germline variant.
- r3, p3, AURAGEN, pancreatic-cancer, CHU A: prescribed and validated
  2024-01-05, frozen sample (12.5 %) 2024-01-12, sequencing failed for low tumour
  cellularity (stopped Procedure asking for a new sample), no report.
- r4, p4, AURAGEN, other-cancer, no hospital: no authoredOn, validation date
  known only to the month (2024-02), blood sample 2024-02-10, tumour sample
  without preservation 2024-02-12, report 2024-03-01 whose results include an
  implication, germline variant, no RCP d'aval.
- r5, p5, AURAGEN, pancreatic-cancer, CHU B: prescribed 2024-10-26T23:30+02:00,
  report 2024-10-27T23:30Z (00:30 on 28 October in Paris, winter time since
  27 October: 2 calendar days, where UTC days would give 1), a preliminary
  report ignored, an RCP d'aval of 2024-09-01 before the report and one of
  2024-11-05 naming no report (olaparib), Olaparib started 2024-11-05 after
  gemcitabine and nab-paclitaxel from 2024-06-01, trial candidate only.
- r6, p6, SeqOIA, pancreatic-cancer, CHU A: prescribed 2024-02-01, RCP
  d'amont refused, nothing else.
- r7, p1 again, AURAGEN, pancreatic-cancer, CHU A: prescribed 2024-04-01,
  report 2024-04-21, no RCP d'aval on or after it.

p1 has a CIM-10 diagnosis C25.9 (cancer type C25), p1 is on study in a trial.
"""

import pytest

from sonco_fhir.indicators.catalogue import BY_ID, CATALOGUE
from sonco_fhir.indicators.fastview import compile_view, run_fast
from sonco_fhir.indicators.sql import aggregate, compute, indicator_rows, load_view_definitions, load_views
from sonco_fhir.views import run_view
from conftest import REPOSITORY
from sonco_fhir.indicators.strata import parse_period

BASE = "https://sonco.example/fhir"
MILESTONE_SYSTEM = f"{BASE}/CodeSystem/sonco-pathway-milestone"
RECOMMENDATION_SYSTEM = f"{BASE}/CodeSystem/sonco-rcp-recommendation"
FOLLOW_UP_SYSTEM = f"{BASE}/CodeSystem/sonco-sequencing-follow-up"
LOINC = "http://loinc.org"
TBD = "http://hl7.org/fhir/uv/genomics-reporting/CodeSystem/tbd-codes-cs"
OVERALL = "*"


def _patient(patient):
    return {"reference": f"Patient/{patient}"}


def service_request(request_id, patient, authored_on, lab, preindication="pancreatic-cancer", hospital=None):
    resource = {
        "resourceType": "ServiceRequest", "id": request_id, "status": "completed", "intent": "order",
        "subject": _patient(patient), "performer": [{"display": lab}],
        "reasonCode": [{"coding": [{"system": f"{BASE}/CodeSystem/sonco-pfmg-preindication", "code": preindication}]}],
    }
    if authored_on is not None:
        resource["authoredOn"] = authored_on
    if hospital is not None:
        resource["requester"] = {"display": hospital}
    return resource


def rcp_amont(task_id, patient, request_id, end, decision="validated"):
    return {
        "resourceType": "Task", "id": task_id, "status": "completed", "intent": "order",
        "code": {"coding": [{"system": MILESTONE_SYSTEM, "code": "rcp-amont-validation"}]},
        "businessStatus": {"coding": [{"system": f"{BASE}/CodeSystem/sonco-rcp-decision", "code": decision}]},
        "focus": {"reference": f"ServiceRequest/{request_id}"}, "for": _patient(patient),
        "executionPeriod": {"end": end},
    }


def sequencing_failure(task_id, patient, request_id, reason, end):
    return {
        "resourceType": "Task", "id": task_id, "status": "failed", "intent": "order",
        "statusReason": {"coding": [{"system": f"{BASE}/CodeSystem/sonco-sequencing-failure-reason", "code": reason}]},
        "code": {"coding": [{"system": MILESTONE_SYSTEM, "code": "sequencing"}]},
        "focus": {"reference": f"ServiceRequest/{request_id}"}, "for": _patient(patient),
        "executionPeriod": {"end": end},
    }


def specimen(specimen_id, patient, request_id, received, sample_type="TUMOR", preservation=None, cellularity=None):
    resource = {
        "resourceType": "Specimen", "id": specimen_id, "subject": _patient(patient),
        "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0487", "code": sample_type}]},
        "receivedTime": received, "request": [{"reference": f"ServiceRequest/{request_id}"}],
    }
    if preservation:
        resource["processing"] = [{"procedure": {"coding": [{"system": f"{BASE}/CodeSystem/sonco-sample-preservation", "code": preservation}]}}]
    if cellularity is not None:
        resource["extension"] = [{"url": f"{BASE}/StructureDefinition/sonco-tumour-cellularity",
                                  "valueQuantity": {"value": cellularity, "unit": "%", "system": "http://unitsofmeasure.org", "code": "%"}}]
    return resource


def sequencing(procedure_id, patient, request_id, start, end, status="completed", follow_up=None):
    """A sequencing Procedure; follow_up is (system, code) of its followUp."""
    resource = {
        "resourceType": "Procedure", "id": procedure_id, "status": status, "basedOn": [{"reference": f"ServiceRequest/{request_id}"}],
        "category": {"coding": [{"system": MILESTONE_SYSTEM, "code": "sequencing"}]},
        "code": {"coding": [{"system": LOINC, "code": "86206-0"}]},
        "subject": _patient(patient), "performedPeriod": {"start": start, "end": end},
    }
    if follow_up:
        resource["followUp"] = [{"coding": [{"system": follow_up[0], "code": follow_up[1]}]}]
    return resource


def genomic_report(report_id, patient, issued, *request_ids, status="final", loinc="51969-4", results=()):
    return {
        "resourceType": "DiagnosticReport", "id": report_id, "status": status,
        "code": {"coding": [{"system": LOINC, "code": loinc}]}, "subject": _patient(patient), "issued": issued,
        "basedOn": [{"reference": f"ServiceRequest/{request_id}"} for request_id in request_ids],
        "result": [{"reference": f"Observation/{observation}"} for observation in results],
    }


def variant(observation_id, patient, origin="LA6684-0", presence="LA9633-4"):
    return {
        "resourceType": "Observation", "id": observation_id, "status": "final",
        "code": {"coding": [{"system": LOINC, "code": "69548-6"}]}, "subject": _patient(patient),
        "valueCodeableConcept": {"coding": [{"system": LOINC, "code": presence}]},
        "component": [{"code": {"coding": [{"system": LOINC, "code": "48002-0"}]},
                       "valueCodeableConcept": {"coding": [{"system": LOINC, "code": origin}]}}],
    }


def implication(observation_id, patient, *derived_from):
    return {
        "resourceType": "Observation", "id": observation_id, "status": "final",
        "code": {"coding": [{"system": TBD, "code": "therapeutic-implication"}]}, "subject": _patient(patient),
        "derivedFrom": [{"reference": f"Observation/{observation}"} for observation in derived_from],
    }


def rcp_aval(plan_id, patient, created, *recommendations, report=None, milestone="rcp-aval", system=RECOMMENDATION_SYSTEM):
    """A CarePlan; each recommendation is a code, or (code, drug) for a targeted therapy, or (code, None, trial)."""
    activities = []
    for recommendation in recommendations:
        code, drug, trial = (recommendation, None, None) if isinstance(recommendation, str) else (*recommendation, None)[:3]
        detail = {"status": "not-started", "code": {"coding": [{"system": system, "code": code}]}}
        if drug:
            detail["productCodeableConcept"] = {"text": drug}
        if trial:
            detail["description"] = trial
        activities.append({"detail": detail})
    resource = {
        "resourceType": "CarePlan", "id": plan_id, "status": "active", "intent": "plan",
        "category": [{"coding": [{"system": MILESTONE_SYSTEM, "code": milestone}]}],
        "subject": _patient(patient), "created": created, "activity": activities,
    }
    if report:
        resource["supportingInfo"] = [{"reference": f"DiagnosticReport/{report}"}]
    return resource


def medication(statement_id, patient, drug, start, status="active"):
    return {
        "resourceType": "MedicationStatement", "id": statement_id, "status": status,
        "medicationCodeableConcept": {"text": drug}, "subject": _patient(patient), "effectivePeriod": {"start": start},
    }


def condition(condition_id, patient, code, recorded):
    return {
        "resourceType": "Condition", "id": condition_id, "subject": _patient(patient), "recordedDate": recorded,
        "code": {"coding": [{"system": "https://smt.esante.gouv.fr/terminologie-cim-10", "code": code}]},
    }


def research_subject(subject_id, patient, status):
    return {"resourceType": "ResearchSubject", "id": subject_id, "status": status, "individual": _patient(patient),
            "study": {"reference": "ResearchStudy/study-1"}}


def cohort():
    return [
        # r1
        service_request("r1", "p1", "2024-01-10", "SeqOIA", hospital="CHU A"),
        rcp_amont("t1", "p1", "r1", "2024-01-15"),
        specimen("s1", "p1", "r1", "2024-01-20T09:00:00+01:00", preservation="frozen", cellularity=60),
        # A followUp code of another system is not a re-sampling request.
        sequencing("q1", "p1", "r1", "2024-01-22", "2024-02-19", follow_up=("http://snomed.info/sct", "new-sample")),
        variant("v1", "p1"),
        implication("i1", "p1", "v1"),
        genomic_report("rep1", "p1", "2024-02-29T10:00:00+01:00", "r1", results=["v1"]),
        rcp_aval("cp1", "p1", "2024-03-10", ("targeted-therapy", "osimertinib"), ("clinical-trial", None, "NCT00000000"), report="rep1"),
        medication("m1", "p1", "carboplatin", "2023-11-01"),
        medication("m2", "p1", "osimertinib", "2024-03-20"),
        condition("c1", "p1", "C25.9", "2023-12-01"),
        research_subject("rs1", "p1", "on-study"),
        # r2
        service_request("r2", "p2", "2024-03-30", "SeqOIA", preindication="cholangiocarcinoma", hospital="CHU B"),
        rcp_amont("t2", "p2", "r2", "2024-03-31T23:30:00Z"),
        specimen("s2", "p2", "r2", "2024-04-01T00:30:00+02:00", preservation="ffpe", cellularity=15),
        specimen("s3", "p2", "r2", "2024-04-10", preservation="ffpe", cellularity=20),
        variant("v2", "p2", origin="LA6683-2"),
        genomic_report("rep2", "p2", "2024-04-30T08:00:00+02:00", "r2", status="amended", results=["v2"]),
        rcp_aval("cp2", "p2", "2024-05-02", "no-actionable-alteration", "oncogenetics-referral", report="rep2"),
        # r3
        service_request("r3", "p3", "2024-01-05", "AURAGEN", hospital="CHU A"),
        rcp_amont("t3", "p3", "r3", "2024-01-05"),
        specimen("s4", "p3", "r3", "2024-01-12", preservation="frozen", cellularity=12.5),
        sequencing_failure("f3", "p3", "r3", "low-tumour-cellularity", "2024-02-20"),
        sequencing("q3", "p3", "r3", "2024-01-15", "2024-02-20", status="stopped", follow_up=(FOLLOW_UP_SYSTEM, "new-sample")),
        variant("v3", "p3", origin="LA6683-2"),
        # r4
        service_request("r4", "p4", None, "AURAGEN", preindication="other-cancer"),
        rcp_amont("t4", "p4", "r4", "2024-02"),
        specimen("s5", "p4", "r4", "2024-02-10", sample_type="BLD"),
        specimen("s6", "p4", "r4", "2024-02-12"),
        variant("v4", "p4", origin="LA6683-2"),
        implication("i4", "p4"),
        genomic_report("rep4", "p4", "2024-03-01T12:00:00+01:00", "r4", results=["v4", "i4"]),
        # r5
        service_request("r5", "p5", "2024-10-26T23:30:00+02:00", "AURAGEN", hospital="CHU B"),
        genomic_report("rep5", "p5", "2024-10-27T23:30:00Z", "r5"),
        genomic_report("rep5-draft", "p5", "2024-10-20T10:00:00+02:00", "r5", status="preliminary"),
        rcp_aval("cp5-old", "p5", "2024-09-01", "no-actionable-alteration"),
        rcp_aval("cp5", "p5", "2024-11-05", ("targeted-therapy", "olaparib")),
        medication("m3", "p5", "gemcitabine", "2024-06-01"),
        medication("m4", "p5", "nab-paclitaxel", "2024-06-01"),
        medication("m5", "p5", "Olaparib", "2024-11-05"),
        research_subject("rs5", "p5", "candidate"),
        # r6
        service_request("r6", "p6", "2024-02-01", "SeqOIA", hospital="CHU A"),
        rcp_amont("t6", "p6", "r6", "2024-02-03", decision="refused"),
        # r7
        service_request("r7", "p1", "2024-04-01", "AURAGEN", hospital="CHU A"),
        genomic_report("rep7", "p1", "2024-04-21T10:00:00+02:00", "r7"),
    ]


def by_type(resources):
    grouped = {}
    for resource in resources:
        grouped.setdefault(resource["resourceType"], []).append(resource)
    return grouped


@pytest.fixture(scope="module")
def connection():
    return load_views(by_type(cohort()))


@pytest.fixture(scope="module")
def overall(connection):
    """The overall cell of every indicator, by Measure id."""
    return {measure: cells[0] for measure, cells in compute(connection).items()}


def cells_by_stratum(connection, measure, dimension, period=None):
    cells = aggregate(connection, BY_ID[measure], (dimension,), parse_period(period))
    return {cell["stratum"]: cell for cell in cells if cell["dimension"] == dimension}


# Delays: (Measure id, values in days, excluded). The values are in the module docstring's dates.
DELAYS = [
    # r1 5 (01-10 to 01-15), r2 2 (03-30 to 1 April in Paris), r3 0 (same day); r4 excluded: validation known to the month only.
    ("sonco-delay-prescription-validation", [0, 2, 5], 1),
    # r1 5, r2 0 (validation and reception both on 1 April in Paris), r3 7; r4 excluded: no validation day.
    ("sonco-delay-validation-reception", [0, 5, 7], 1),
    # r1 only: 01-20 to 02-19.
    ("sonco-delay-reception-sequencing", [30], 0),
    # r1 40 (01-20 to 02-29, leap year), r2 29, r4 20 (first sample, the blood one, 02-10 to 03-01); r5, r7 excluded: no sample.
    ("sonco-delay-reception-report", [20, 29, 40], 2),
    # r1 50, r2 31, r5 2 (across the end of summer time), r7 20; r4 excluded: no authoredOn.
    ("sonco-delay-prescription-report", [2, 20, 31, 50], 1),
    # r1 10 (linked plan), r2 2 (linked plan), r5 8 (first plan on or after the report, the 2024-09-01 plan is before it).
    ("sonco-delay-report-rcp-aval", [2, 8, 10], 0),
    # r1 10 (03-10 to 03-20), r5 0 (Olaparib matches olaparib ignoring case, same day).
    ("sonco-delay-rcp-aval-treatment", [0, 10], 0),
    # r1 70 (01-10 to 03-20), r5 10 (10-26 to 11-05).
    ("sonco-delay-prescription-treatment", [10, 70], 0),
    # Distinct medications started before the first report day: r1 1 (carboplatin), r7 2 (carboplatin,
    # osimertinib), r2 0, r4 0, r5 2 (gemcitabine, nab-paclitaxel).
    ("sonco-lines-before-report", [0, 0, 1, 2, 2], 0),
    # On or after it: r1 1 (osimertinib), r7 0, r2 0, r4 0, r5 1 (Olaparib).
    ("sonco-lines-after-report", [0, 0, 0, 1, 1], 0),
]

# Shares: (Measure id, numerator, denominator).
SHARES = [
    ("sonco-completeness-prescription", 6, 7),  # all but r4
    ("sonco-completeness-validation", 3, 7),  # r1, r2, r3; r4 partial date, r6 refused
    ("sonco-completeness-reception", 4, 7),  # r1 to r4
    ("sonco-completeness-sequencing", 1, 7),  # r1
    ("sonco-completeness-report", 5, 7),  # r1, r2, r4, r5, r7
    ("sonco-completeness-rcp-aval", 3, 5),  # r1, r2, r5 of the five reported requests
    ("sonco-completeness-treatment", 2, 2),  # r1, r5 of the two with a targeted therapy recommended
    ("sonco-share-actionable-report", 2, 5),  # rep1 (derived from v1), rep4 (i4 in results) of five reported reports
    ("sonco-share-therapeutic-recommendation", 2, 4),  # p1, p5 of the reported patients p1, p2, p4, p5
    ("sonco-share-recommended-treatment", 2, 2),  # p1, p5
    ("sonco-share-trial-inclusion", 1, 4),  # p1 on study; p5 only a candidate
    ("sonco-share-germline-oncogenetics", 1, 2),  # p2 referred, p4 not; p3 has no report
    ("sonco-rate-technical-failure", 1, 6),  # r3 of r1, r2, r3, r4, r5, r7
    # s2 15 % and s4 12.5 % of s1 to s4; s3 at 20 % is not below the threshold, s6 has no cellularity, s5 is blood.
    ("sonco-share-low-cellularity", 2, 4),
    # r3 (stopped sequencing with followUp new-sample) of r1 to r4; r2 has two tumour samples but no request for one.
    ("sonco-rate-resampling", 1, 4),
    ("sonco-share-ffpe", 2, 4),  # s2, s3 of s1 to s4; s5 is blood, s6 has no preservation
    ("sonco-share-amended-reports", 1, 5),  # rep2
    ("sonco-share-treatment-changed", 2, 3),  # p1 (osimertinib), p5 (Olaparib); p2 no medication
]


def quantile(values, fraction):
    """Linear interpolation between the two nearest ranks, as DuckDB's quantile_cont."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * fraction
    lower = int(position)
    upper = min(lower + 1, len(ordered) - 1)
    return ordered[lower] + (ordered[upper] - ordered[lower]) * (position - lower)


def test_catalogue_fully_covered():
    assert {measure for measure, *_ in DELAYS + SHARES} == {indicator.id for indicator in CATALOGUE}


@pytest.mark.parametrize(("measure", "values", "excluded"), DELAYS, ids=[case[0] for case in DELAYS])
def test_continuous_indicator_values(overall, measure, values, excluded):
    cell = overall[measure]

    assert cell["count"] == len(values)
    assert cell["excluded"] == excluded
    assert cell["median"] == pytest.approx(quantile(values, 0.5))
    assert cell["p25"] == pytest.approx(quantile(values, 0.25))
    assert cell["p75"] == pytest.approx(quantile(values, 0.75))
    assert cell["p90"] == pytest.approx(quantile(values, 0.9))


def test_delay_statistics_by_hand(overall):
    # Delays 2, 20, 31, 50: median (20 + 31) / 2, p25 at rank 0.75 = 2 + 0.75 * 18,
    # p75 at rank 2.25 = 31 + 0.25 * 19, p90 at rank 2.7 = 31 + 0.7 * 19.
    cell = overall["sonco-delay-prescription-report"]

    assert cell["median"] == 25.5
    assert cell["p25"] == pytest.approx(15.5)
    assert cell["p75"] == pytest.approx(35.75)
    assert cell["p90"] == pytest.approx(44.3)


@pytest.mark.parametrize(("measure", "numerator", "denominator"), SHARES, ids=[case[0] for case in SHARES])
def test_share_indicator_values(overall, measure, numerator, denominator):
    cell = overall[measure]

    assert cell["numerator"] == numerator
    assert cell["denominator"] == denominator


def test_patients_counted_once(overall):
    # p1 has two reported requests (r1, r7): 4 distinct patients for 5 delays.
    assert overall["sonco-delay-prescription-report"]["patients"] == 4
    assert overall["sonco-share-therapeutic-recommendation"]["patients"] == 4


def test_time_zone_change_counts_paris_days(connection):
    rows = {row["request"]: row["value"] for row in indicator_rows(connection, BY_ID["sonco-delay-prescription-report"])}

    # 2024-10-26T23:30+02:00 to 2024-10-27T23:30Z: 26 to 28 October in Paris (UTC days would give 1).
    assert rows["ServiceRequest/r5"] == 2
    assert rows["ServiceRequest/r4"] is None


def test_same_day_events_count_zero(connection):
    rows = {row["request"]: row["value"] for row in indicator_rows(connection, BY_ID["sonco-delay-validation-reception"])}

    # 2024-03-31T23:30Z and 2024-04-01T00:30+02:00 are both 1 April in Paris.
    assert rows["ServiceRequest/r2"] == 0


def test_by_lab(connection):
    delay = cells_by_stratum(connection, "sonco-delay-prescription-report", "lab")
    share = cells_by_stratum(connection, "sonco-share-therapeutic-recommendation", "lab")

    assert (delay["SeqOIA"]["count"], delay["SeqOIA"]["median"]) == (2, 40.5)  # r1 50, r2 31
    assert (delay["AURAGEN"]["count"], delay["AURAGEN"]["median"], delay["AURAGEN"]["excluded"]) == (2, 11, 1)  # r5 2, r7 20; r4
    assert (share["SeqOIA"]["numerator"], share["SeqOIA"]["denominator"]) == (1, 2)  # p1 of p1, p2
    assert (share["AURAGEN"]["numerator"], share["AURAGEN"]["denominator"]) == (2, 3)  # p1 (r7), p5 of p1, p4, p5


def test_by_preindication_cancer_sample_hospital(connection):
    measure = "sonco-delay-prescription-report"
    preindication = cells_by_stratum(connection, measure, "preindication")
    cancer = cells_by_stratum(connection, measure, "cancer_type")
    sample = cells_by_stratum(connection, measure, "sample_type")
    hospital = cells_by_stratum(connection, measure, "hospital")

    assert preindication["pancreatic-cancer"]["median"] == 20  # r1 50, r5 2, r7 20
    assert preindication["cholangiocarcinoma"]["median"] == 31
    assert (preindication["other-cancer"]["count"], preindication["other-cancer"]["excluded"]) == (0, 1)
    assert cancer["C25"]["median"] == 35  # p1: r1 50, r7 20
    assert cancer["?"]["median"] == 16.5  # (r2 31 + r5 2) / 2, r4 excluded
    assert sample["frozen"]["median"] == 50
    assert sample["ffpe"]["median"] == 31
    assert (sample["?"]["median"], sample["?"]["excluded"]) == (11, 1)  # r5 2, r7 20, r4
    assert hospital["CHU A"]["median"] == 35
    assert hospital["CHU B"]["median"] == 16.5  # r2 31, r5 2
    assert set(hospital) == {"CHU A", "CHU B", "?"}


def test_by_month_quarter_year(connection):
    measure = "sonco-delay-prescription-report"
    month = cells_by_stratum(connection, measure, "month")
    quarter = cells_by_stratum(connection, measure, "quarter")
    year = cells_by_stratum(connection, measure, "year")

    assert {stratum: cell["median"] for stratum, cell in month.items()} == {
        "2024-01": 50, "2024-03": 31, "2024-04": 20, "2024-10": 2, "?": None}
    assert month["?"]["excluded"] == 1
    assert quarter["2024-Q1"]["median"] == 40.5
    assert quarter["2024-Q2"]["median"] == 20
    assert quarter["2024-Q4"]["median"] == 2
    assert year["2024"]["count"] == 4


def test_period_filters_prescriptions(connection):
    first_quarter = cells_by_stratum(connection, "sonco-delay-prescription-report", "lab", "2024-Q1")
    cells = aggregate(connection, BY_ID["sonco-delay-prescription-report"], (), parse_period("2024-Q1"))

    # r1 (January) and r2 (March) only; r4 has no prescription day and leaves the population.
    assert (cells[0]["count"], cells[0]["median"], cells[0]["excluded"]) == (2, 40.5, 0)
    assert set(first_quarter) == {"SeqOIA"}
    october = aggregate(connection, BY_ID["sonco-delay-prescription-report"], (), parse_period("2024-10..2024-12"))
    assert (october[0]["count"], october[0]["median"]) == (1, 2)


def test_reports_outside_population_ignored():
    resources = [
        service_request("a", "p1", "2024-03-01", "SeqOIA"),
        genomic_report("x", "p1", "2024-03-05", "a"),
        genomic_report("hospital", "p2", "2024-03-02", "unknown"),  # no SONCO ServiceRequest
        genomic_report("draft", "p1", "2024-03-02", "a", status="preliminary"),
        genomic_report("other-code", "p1", "2024-03-02", "a", loinc="11526-1"),
        rcp_aval("c6", "p1", "2024-04-01", "targeted-therapy", milestone="rcp-amont"),
        rcp_aval("c7", "p1", "2024-04-01", "targeted-therapy", system="http://example.org/other-system"),
    ]

    results = {measure: cells[0] for measure, cells in compute(load_views(by_type(resources))).items()}

    assert (results["sonco-delay-prescription-report"]["count"], results["sonco-delay-prescription-report"]["median"]) == (1, 4)
    assert results["sonco-share-amended-reports"]["denominator"] == 1
    share = results["sonco-share-therapeutic-recommendation"]
    assert (share["numerator"], share["denominator"]) == (0, 1)


def test_empty_cohort():
    results = compute(load_views({}))

    for indicator in CATALOGUE:
        cells = results[indicator.id]
        assert [cell["dimension"] for cell in cells] == [OVERALL], indicator.id
        assert cells[0]["patients"] == 0
        if indicator.continuous:
            assert (cells[0]["count"], cells[0]["median"]) == (0, None)
        else:
            assert (cells[0]["numerator"], cells[0]["denominator"]) == (0, 0)


def generated_cohort(patients):
    import sys

    sys.path.insert(0, str(REPOSITORY / "bench" / "indicators"))
    from generate import generate

    return list(generate(patients))


@pytest.mark.parametrize("view", load_view_definitions(), ids=lambda view: view["name"])
def test_fast_runner_matches_reference(view):
    resources = cohort() + generated_cohort(60)

    compile_view(view)  # every view of the catalogue is in the compiled subset
    assert run_fast(view, resources) == run_view(view, resources)


def test_resampling_reads_follow_up(connection):
    rows = indicator_rows(connection, BY_ID["sonco-rate-resampling"])

    # Only r3's stopped sequencing requests a new sample (followUp new-sample of sonco-sequencing-follow-up);
    # r2's second tumour sample and r1's followUp coded in another system do not count.
    assert {row["request"] for row in rows if row["hit"]} == {"ServiceRequest/r3"}
    assert {row["request"] for row in rows} == {f"ServiceRequest/r{number}" for number in (1, 2, 3, 4)}


def test_low_cellularity_reads_extension(connection):
    rows = indicator_rows(connection, BY_ID["sonco-share-low-cellularity"])

    # Under 20 %: s2 (15 %) and s4 (12.5 %); s1 (60 %) and s3 (exactly 20 %) are not.
    assert {row["unit"] for row in rows if row["hit"]} == {"Specimen/s2", "Specimen/s4"}
    assert {row["unit"] for row in rows} == {"Specimen/s1", "Specimen/s2", "Specimen/s3", "Specimen/s4"}


def test_hospital_order_not_a_prescription():
    """A hospital lab order (HL7 ORM/OML, no PFMG pre-indication) joins no indicator population."""
    order = {
        "resourceType": "ServiceRequest", "id": "order-1", "status": "active", "intent": "order",
        "subject": _patient("p1"), "authoredOn": "2021-10-20T11:26:00+02:00",
        "code": {"coding": [{"system": "http://loinc.org", "code": "24331-1"}]},
    }
    with_order = load_views(by_type(cohort() + [order]))
    counts = {row[0] for row in with_order.execute("SELECT id FROM service_request").fetchall()}
    assert "order-1" not in counts
    cell = compute(with_order)["sonco-completeness-prescription"][0]
    assert (cell["numerator"], cell["denominator"]) == (6, 7)
