"""The main job against a real HAPI FHIR server: ingest every example, twice, then the indicators.

Expected indicator values are computed by hand from the example exports:
SPICE requests DEM-2024-00871 (08/01 -> 26/03: 78 days), DEM-2024-00905
(22/01 -> amended report 29/04: 98) and DEM-2024-01012 (12/02 -> 17/06: 126);
HYGEN requests HYG-24-0312 (10/01 -> 19/03: 69), HYG-24-0450 (05/02 -> 30/04: 85),
HYG-24-0451 (05/02 -> 16/04: 71), HYG-24-0533 (04/03 -> 27/05: 84) and
HYG-24-0590 (25/03 -> 20/06: 87). Therapeutic recommendations: SeqOIA 2 of 3
reported patients, AURAGEN 2 of 4 (one patient has two requests), 4 of 7 overall.
SPICE request DEM-2024-01455 ends in a failed sequencing with a new sample
and has no report yet, so it changes none of these figures.
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
COUNTED_TYPES = ("Patient", "Encounter", "ServiceRequest", "Condition", "Consent", "Task", "Specimen", "Procedure",
                 "DiagnosticReport", "Observation", "CarePlan", "Provenance")


def invoke(*args):
    result = CliRunner().invoke(build_app(), list(args))
    return result


def snapshot(base_url: str, resource_types=COUNTED_TYPES) -> dict[str, dict[str, str]]:
    """Return every resource id of the given types with its versionId, by type."""
    versions: dict[str, dict[str, str]] = {}
    for resource_type in resource_types:
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
    # The example cohort has fewer than 10 patients per lab, so small-cell suppression is turned off.
    indicators = invoke("indicators", "--format", "json", "--suppression-threshold", "0")
    yield {"first": first, "second": second, "after_first": after_first, "after_second": after_second, "indicators": indicators}
    patch.undo()


def test_examples_ingest_cleanly(loaded):
    for result in loaded["first"]:
        assert result.exit_code == 0, result.output


def test_second_ingest_changes_nothing(loaded):
    for result in loaded["second"]:
        assert result.exit_code == 0, result.output
    assert loaded["after_second"] == loaded["after_first"]
    assert len(loaded["after_first"]["ServiceRequest"]) == 14  # 7 SPICE and 7 HYGEN requests


def test_indicator_values(loaded):
    assert loaded["indicators"].exit_code == 0, loaded["indicators"].output
    rows = json.loads(loaded["indicators"].stdout)
    values = {(row["indicator"], row["stratum"]): row for row in rows if row["dimension"] in ("lab", "*")}

    delay = "sonco-delay-prescription-report"
    assert values[(delay, "SeqOIA")]["value"] == 98
    assert values[(delay, "AURAGEN")]["value"] == 84
    assert values[(delay, "*")]["value"] == 84.5  # median of 69 71 78 84 85 87 98 126
    assert values[(delay, "*")]["count"] == 8

    share = "sonco-share-therapeutic-recommendation"
    assert (values[(share, "SeqOIA")]["numerator"], values[(share, "SeqOIA")]["denominator"]) == (2, 3)
    assert (values[(share, "AURAGEN")]["numerator"], values[(share, "AURAGEN")]["denominator"]) == (2, 4)
    assert (values[(share, "*")]["numerator"], values[(share, "*")]["denominator"]) == (4, 7)


def test_measure_reports_stored(loaded, hapi):
    measure = "https://sonco.example/fhir/Measure/sonco-delay-prescription-report"
    bundle = requests.get(f"{hapi}/MeasureReport", params={"measure": measure}, headers={"Cache-Control": "no-cache"},
                          timeout=60).json()
    reports = [entry["resource"] for entry in bundle.get("entry", [])]
    assert reports

    # Other server tests may store reports of the same measure: the last one written is this module's.
    delay = max(reports, key=lambda report: report["meta"]["lastUpdated"])
    assert delay["type"] == "summary"
    assert delay["group"][0]["measureScore"]["value"] == 84.5
    by_lab = [stratifier for stratifier in delay["group"][0]["stratifier"] if stratifier["code"][0]["text"] == "lab"]
    strata = {s["value"]["text"]: s["measureScore"]["value"] for s in by_lab[0]["stratum"]}
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
