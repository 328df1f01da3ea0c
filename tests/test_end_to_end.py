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

Treatments come from examples/fhir/Bundle-sonco-treatments.json, linked to the
lab patients by INS-NIR. The RCP d'aval recommended a targeted therapy for two
requests, and both patients started the drug (matched by its text):
DEM-2024-00871 sotorasib from 23/04/2024 (RCP d'aval 09/04: 14 days;
prescription 08/01: 23 + 29 + 31 + 23 = 106 days) and HYG-24-0312 olaparib,
prescribed by a MedicationRequest, from 2024-04-19 (RCP d'aval 02/04: 17 days;
prescription 10/01: 21 + 29 + 31 + 19 = 100 days). Medians: 15.5 and 103 days;
share who received the recommended treatment 1/1 per lab, 2/2 overall.
Lines before the report (distinct drugs started before its day): DEM-2024-00871
1 (gemcitabine), DEM-2024-01012 1 (carboplatin), HYG-24-0312 3 (oxaliplatin,
irinotecan, fluorouracil), HYG-24-0450 and HYG-24-0451 2 each (carboplatin,
paclitaxel), the three other reported requests 0: median 1 overall (0 0 0 1 1 2
2 3), 1 for SeqOIA (0 1 1), 2 for AURAGEN (0 0 2 2 3). Lines on or after the
report: DEM-2024-00871 1, DEM-2024-01012 1 (irinotecan from 10/07),
HYG-24-0312 1, others 0: median 0 overall, 1 for SeqOIA, 0 for AURAGEN.
Treatment changed after the RCP d'aval (a drug started on or after its day that
was not started before): patients of DEM-2024-00871, DEM-2024-01012 and
HYG-24-0312, out of the 6 patients with an RCP d'aval (SeqOIA 2/3, AURAGEN 1/3).

Re-sampling: the lab asked for a new sample (nouveau_prelevement oui) for
DEM-2024-01455 and HYG-24-0488, out of the requests with a tumour sample (5
SPICE, 6 HYGEN): 1/5, 1/6, 2/11. Tumour cellularity under 20 %: PRL-24-02210
(10 %) of the 6 SPICE tumour samples (60 40 30 70 10 50) and ECH-AU-24-2460
(10 %) of the 6 HYGEN ones (60 45 45 10 70 35): 1/6, 1/6, 2/12.

Trial inclusion: the hospital bundle's ResearchSubject (on-study in
NCT09990002, the trial the RCP d'aval of HYG-24-0450 recommended) includes the
patient of HYG-24-0450 and HYG-24-0451: AURAGEN 1 of 4 reported patients,
SeqOIA 0 of 3, 1 of 7 overall.
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
                 "DiagnosticReport", "Observation", "CarePlan", "MedicationStatement", "ResearchSubject", "Provenance")


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


def test_treatment_indicator_values(loaded):
    rows = json.loads(loaded["indicators"].stdout)
    values = {(row["indicator"], row["stratum"]): row for row in rows if row["dimension"] in ("lab", "*")}

    def value(indicator):
        return {stratum: values[(indicator, stratum)]["value"] for stratum in ("SeqOIA", "AURAGEN", "*")}

    def fraction(indicator):
        return {stratum: (values[(indicator, stratum)]["numerator"], values[(indicator, stratum)]["denominator"])
                for stratum in ("SeqOIA", "AURAGEN", "*")}

    assert value("sonco-delay-rcp-aval-treatment") == {"SeqOIA": 14, "AURAGEN": 17, "*": 15.5}
    assert value("sonco-delay-prescription-treatment") == {"SeqOIA": 106, "AURAGEN": 100, "*": 103}
    assert fraction("sonco-share-recommended-treatment") == {"SeqOIA": (1, 1), "AURAGEN": (1, 1), "*": (2, 2)}
    assert fraction("sonco-completeness-treatment") == {"SeqOIA": (1, 1), "AURAGEN": (1, 1), "*": (2, 2)}
    assert value("sonco-lines-before-report") == {"SeqOIA": 1, "AURAGEN": 2, "*": 1}
    assert values[("sonco-lines-before-report", "*")]["count"] == 8
    assert value("sonco-lines-after-report") == {"SeqOIA": 1, "AURAGEN": 0, "*": 0}
    assert fraction("sonco-share-treatment-changed") == {"SeqOIA": (2, 3), "AURAGEN": (1, 3), "*": (3, 6)}


def test_quality_and_trial_values(loaded):
    rows = json.loads(loaded["indicators"].stdout)
    values = {(row["indicator"], row["stratum"]): (row["numerator"], row["denominator"])
              for row in rows if row["dimension"] in ("lab", "*")}

    assert [values[("sonco-rate-resampling", stratum)] for stratum in ("SeqOIA", "AURAGEN", "*")] == [(1, 5), (1, 6), (2, 11)]
    assert [values[("sonco-share-low-cellularity", stratum)] for stratum in ("SeqOIA", "AURAGEN", "*")] == [(1, 6), (1, 6), (2, 12)]
    assert [values[("sonco-share-trial-inclusion", stratum)] for stratum in ("SeqOIA", "AURAGEN", "*")] == [(0, 3), (1, 4), (1, 7)]


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
