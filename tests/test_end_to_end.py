"""The main job against a real HAPI FHIR server: ingest every example, twice, then the indicators.

Expected indicator values are computed by hand from the example exports:
SPICE requests DEM-2024-00871 (08/01 -> 26/03: 78 days), DEM-2024-00905
(22/01 -> amended report 29/04: 98) and DEM-2024-01012 (12/02 -> 17/06: 126);
HYGEN requests HYG-24-0312 (10/01 -> 19/03: 69), HYG-24-0450 (05/02 -> 30/04: 85),
HYG-24-0451 (05/02 -> 16/04: 71), HYG-24-0533 (04/03 -> 27/05: 84) and
HYG-24-0590 (25/03 -> 20/06: 87). Therapeutic recommendations: SeqOIA 2 of 3
reported patients, AURAGEN 2 of 4 (one patient has two requests), 4 of 7 overall.
"""

import json

import pytest
import requests
from typer.testing import CliRunner

from sonco_fhir.cli.main import build_app
from conftest import REPOSITORY, TEST_KEY

pytestmark = pytest.mark.server

EXAMPLES = REPOSITORY / "examples"
SOURCES = [("hl7v2", EXAMPLES / "hl7v2"), ("fhir", EXAMPLES / "fhir"), ("spice", EXAMPLES / "spice"), ("hygen", EXAMPLES / "hygen")]
COUNTED_TYPES = ("Patient", "Encounter", "ServiceRequest", "Task", "Specimen", "DiagnosticReport", "Observation", "CarePlan", "Provenance")


def invoke(*args):
    result = CliRunner().invoke(build_app(), list(args))
    return result


def snapshot(base_url: str) -> dict[str, dict[str, str]]:
    """Every resource id of the counted types with its versionId."""
    versions: dict[str, dict[str, str]] = {}
    for resource_type in COUNTED_TYPES:
        url = f"{base_url}/{resource_type}?_count=1000&_elements=id"
        found = versions.setdefault(resource_type, {})
        while url:
            bundle = requests.get(url, headers={"Cache-Control": "no-cache"}, timeout=60).json()
            for entry in bundle.get("entry", []):
                found[entry["resource"]["id"]] = entry["resource"]["meta"]["versionId"]
            url = next((link["url"] for link in bundle.get("link", []) if link["relation"] == "next"), None)
    return versions


@pytest.fixture(scope="module")
def loaded(hapi, tmp_path_factory):
    """Ingest all examples twice with one crosswalk; return the snapshots and CLI results."""
    patch = pytest.MonkeyPatch()
    patch.setenv("SONCO_FHIR_URL", hapi)
    patch.setenv("SONCO_PSEUDONYM_KEY", TEST_KEY)
    patch.setenv("SONCO_DATA_DIR", str(tmp_path_factory.mktemp("e2e")))
    first = [invoke("ingest", kind, str(path)) for kind, path in SOURCES if path.exists()]
    after_first = snapshot(hapi)
    second = [invoke("ingest", kind, str(path)) for kind, path in SOURCES if path.exists()]
    after_second = snapshot(hapi)
    indicators = invoke("indicators", "--format", "json")
    yield {"first": first, "second": second, "after_first": after_first, "after_second": after_second, "indicators": indicators}
    patch.undo()


def test_examples_ingest_cleanly(loaded):
    for result in loaded["first"]:
        assert result.exit_code == 0, result.output


def test_second_ingest_changes_nothing(loaded):
    for result in loaded["second"]:
        assert result.exit_code == 0, result.output
    assert loaded["after_second"] == loaded["after_first"]
    assert len(loaded["after_first"]["ServiceRequest"]) == 13  # 6 SPICE and 7 HYGEN requests


def test_indicator_values(loaded):
    assert loaded["indicators"].exit_code == 0, loaded["indicators"].output
    rows = json.loads(loaded["indicators"].stdout)
    values = {(row["indicator"], row["lab"]): row for row in rows}

    delay = "sonco-delay-prescription-report"
    assert values[(delay, "SeqOIA")]["value"] == 98
    assert values[(delay, "AURAGEN")]["value"] == 84
    assert values[(delay, "*")]["value"] == 84.5  # median of 69 71 78 84 85 87 98 126
    assert values[(delay, "*")]["denominator"] == 8

    share = "sonco-share-therapeutic-recommendation"
    assert (values[(share, "SeqOIA")]["numerator"], values[(share, "SeqOIA")]["denominator"]) == (2, 3)
    assert (values[(share, "AURAGEN")]["numerator"], values[(share, "AURAGEN")]["denominator"]) == (2, 4)
    assert (values[(share, "*")]["numerator"], values[(share, "*")]["denominator"]) == (4, 7)


def test_measure_reports_stored(loaded, hapi):
    bundle = requests.get(f"{hapi}/MeasureReport", headers={"Cache-Control": "no-cache"}, timeout=60).json()
    reports = [entry["resource"] for entry in bundle.get("entry", [])]
    by_measure = {report["measure"]: report for report in reports}

    delay = by_measure["https://sonco.example/fhir/Measure/sonco-delay-prescription-report"]
    assert delay["type"] == "summary"
    assert delay["group"][0]["measureScore"]["value"] == 84.5
    strata = {s["value"]["text"]: s["measureScore"]["value"] for s in delay["group"][0]["stratifier"][0]["stratum"]}
    assert strata == {"AURAGEN": 84, "SeqOIA": 98}


def test_hospital_and_lab_patient_is_one(loaded, hapi):
    # The ANS test patient arrives by HL7 v2 (IPP 000003 and INS) and by SPICE (DEM-2024-00871).
    search = requests.get(
        f"{hapi}/ServiceRequest", params={"identifier": "https://sonco.example/fhir/NamingSystem/spice-request|DEM-2024-00871"},
        headers={"Cache-Control": "no-cache"}, timeout=60,
    ).json()
    subject = search["entry"][0]["resource"]["subject"]["reference"]
    encounters = requests.get(f"{hapi}/Encounter", params={"subject": subject}, headers={"Cache-Control": "no-cache"}, timeout=60).json()

    assert encounters.get("total", len(encounters.get("entry", []))) >= 1
    patient = requests.get(f"{hapi}/{subject}", timeout=60).json()
    assert patient["gender"] == "female"  # from the HL7 v2 ADT, kept when SPICE merged in
    assert patient["birthDate"] == "1979"
