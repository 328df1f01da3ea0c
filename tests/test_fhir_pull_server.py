"""`pull fhir` from a second, real HAPI server standing in for a hospital EHR, into the session's SONCO HAPI.

The EHR server is started once for this module on another free port, with its own
data folder, and loaded with the public mCODE STU1 and FR Core examples and the
resources of tests/data/fhir_ehr/. Each test uses its own pseudonymisation key and
source system, so its SONCO resources (patients included) are its own.
"""

import json
import os
import shutil
import time
from dataclasses import replace
from pathlib import Path

import pytest
import requests

from conftest import CASES, REPOSITORY, _free_port
from sonco_fhir.canonical import profile_url
from sonco_fhir.config import load_settings
from sonco_fhir.connectors.fhir_rest import pull
from sonco_fhir.connectors.fhir_sources import load_source
from sonco_fhir.loading.hapi import FhirServer
from sonco_fhir.pipeline import build_engine
from test_profiles import errors_of, validation_issues

pytestmark = pytest.mark.server

EHR_DATA = REPOSITORY / "tests" / "data" / "fhir_ehr"
MCODE = CASES / "fhir-mcode-stu1"
FR_CORE_PATIENT = CASES / "fhir-fr-core" / "Patient-avec-INSNIR-logique.json"
MCODE_IPP = "http://hospital.example.org|m123"
FR_CORE_ID = "frcore-6106172"
FR_CORE_INS = "urn:oid:1.2.250.1.213.1.4.10|162126587913677"
FHIR_JSON = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}


# --- the EHR server ---


def _drop_dangling(node, known: set[str]):
    """Remove References to resources that the seed does not contain (practitioners, an organization,
    TNM category observations), because the server checks references on write."""
    if isinstance(node, dict):
        cleaned = {}
        for key, value in node.items():
            if isinstance(value, dict) and isinstance(value.get("reference"), str) and value["reference"] not in known:
                continue
            value = _drop_dangling(value, known)
            if value not in ([], {}):
                cleaned[key] = value
        return cleaned
    if isinstance(node, list):
        return [_drop_dangling(item, known) for item in node
                if not (isinstance(item, dict) and isinstance(item.get("reference"), str) and item["reference"] not in known)]
    return node


def seed_resources() -> list[dict]:
    paths = sorted(MCODE.glob("*.json")) + sorted((EHR_DATA / "seed").glob("*.json"))
    resources = [json.loads(path.read_text(encoding="utf-8")) for path in paths]
    # HAPI lets clients assign only ids with a letter, so the FR Core Patient 6106172 is loaded under another id.
    fr_core = json.loads(FR_CORE_PATIENT.read_text(encoding="utf-8"))
    resources.append(dict(fr_core, id=FR_CORE_ID))
    known = {f"{resource['resourceType']}/{resource['id']}" for resource in resources}
    return [_drop_dangling(resource, known) for resource in resources]


def put_all(base_url: str, resources: list[dict]) -> None:
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": resource, "request": {"method": "PUT", "url": f"{resource['resourceType']}/{resource['id']}"}}
        for resource in resources
    ]}
    response = requests.post(base_url, data=json.dumps(bundle), headers=FHIR_JSON, timeout=120)
    assert response.status_code == 200, response.text[:1000]


@pytest.fixture(scope="module")
def ehr(tmp_path_factory):
    """A second HAPI server (no SONCO profiles) loaded with the seed; yields its base URL."""
    from sonco_fhir.server.manage import start_server, stop_server

    data_dir = tmp_path_factory.mktemp("ehr")
    no_profiles = data_dir / "no-profiles"
    no_profiles.mkdir()
    port = _free_port()
    settings = replace(load_settings(), data_dir=data_dir, server_port=port, profiles_dir=no_profiles,
                       fhir_url=f"http://127.0.0.1:{port}/fhir")
    try:
        start_server(settings)
        put_all(settings.fhir_url, seed_resources())
        # Checkpoints are whole seconds minus one: leave the seed strictly older than the first pull.
        time.sleep(2)
        yield settings.fhir_url
    finally:
        stop_server(settings)
        shutil.rmtree(data_dir, ignore_errors=True)


# --- helpers ---


@pytest.fixture
def isolated(cohort_env, monkeypatch, request):
    """A pseudonymisation key of this test only, so its cohort patients are its own."""
    name = request.node.name.replace("_", "-")
    monkeypatch.setenv("SONCO_PSEUDONYM_KEY", f"pull-test-key-{name}-".ljust(64, "0"))
    return cohort_env


def write_source(folder: Path, ehr: str, system: str, identifiers: list[str], **extra) -> object:
    (folder / "ids.txt").write_text("\n".join(identifiers) + "\n", encoding="utf-8")
    content = {"base_url": ehr, "system": system, "cohort": {"identifiers_file": "ids.txt"}, "page_size": 5,
               "includes": {"MedicationStatement": ["MedicationStatement:medication"],
                            "MedicationRequest": ["MedicationRequest:medication"]},
               "retry": {"max_attempts": 2, "backoff_seconds": 0.1, "max_wait_seconds": 1}, **extra}
    (folder / "ehr.yaml").write_text(json.dumps(content), encoding="utf-8")
    return load_source("ehr", folder)


def run_pull(source, **options):
    settings = load_settings()
    engine = build_engine(settings, read_only=False)
    try:
        return pull(source, settings, engine, FhirServer(settings.fhir_url), **options), engine
    finally:
        engine.crosswalk.close()


def sonco_id(engine, source, resource_type: str, source_id: str) -> str:
    """Return the id of the SONCO resource made from the source's `<resource_type>/<source_id>`."""
    key = f"{source.system}|{resource_type}/{source_id}"
    return engine.pseudonymiser.resource_id(SONCO_TYPES.get(resource_type, resource_type), "fhir", key)


def patient_id(engine, source, source_id: str) -> str:
    return engine.pseudonymiser.resource_id("Patient", "fhir", f"{source.system}|Patient/{source_id}")


def read(base: str, resource_type: str, resource_id: str) -> dict:
    response = requests.get(f"{base}/{resource_type}/{resource_id}", headers=FHIR_JSON, timeout=60)
    assert response.status_code == 200, f"{resource_type}/{resource_id}: HTTP {response.status_code}"
    return response.json()


def search(base: str, resource_type: str, **params) -> list[dict]:
    params.setdefault("_count", 500)
    response = requests.get(f"{base}/{resource_type}", params=params, headers={**FHIR_JSON, "Cache-Control": "no-cache"},
                            timeout=60)
    assert response.status_code == 200, response.text[:500]
    return [entry["resource"] for entry in response.json().get("entry", [])]


def cohort_patient(base: str, engine, source, source_patient: str) -> str:
    """Return the SONCO pseudonym of a source patient, from the subject of its mapped Condition."""
    conditions = {"mCODEPatientExample01": "mCODEPrimaryCancerConditionExample01", FR_CORE_ID: "frcore-lung-cancer"}
    condition = read(base, "Condition", sonco_id(engine, source, "Condition", conditions[source_patient]))
    return condition["subject"]["reference"].split("/", 1)[1]


# The SONCO type each pulled source type becomes.
SONCO_TYPES = {"Condition": "Condition", "MedicationStatement": "MedicationStatement", "MedicationRequest": "MedicationStatement",
               "MedicationAdministration": "MedicationStatement", "Observation": "Observation",
               "DiagnosticReport": "DiagnosticReport", "Specimen": "Specimen", "Encounter": "Encounter",
               "Procedure": "Procedure"}


def source_counts(ehr: str, source_patient: str) -> dict[str, int]:
    """Count the patient's resources at the EHR, by the SONCO type they become."""
    counts = dict.fromkeys(SONCO_TYPES.values(), 0)
    for name, sonco_type in SONCO_TYPES.items():
        counts[sonco_type] += len(search(ehr, name, patient=f"Patient/{source_patient}"))
    return counts


def cohort_counts(base: str, patient: str) -> dict[str, int]:
    return {name: len(search(base, name, subject=f"Patient/{patient}")) for name in set(SONCO_TYPES.values())}


# --- tests ---


def test_full_pull_values(ehr, isolated, tmp_path):
    source = write_source(tmp_path, ehr, "https://ehr-full.test/fhir", [MCODE_IPP, FR_CORE_INS, "http://hospital.example.org|none"])

    report, engine = run_pull(source)

    assert report.patients == 2
    assert report.identifiers_not_found == 1
    assert report.run.problems == []
    assert report.mode == "search"

    primary = json.loads((MCODE / "Condition-mCODEPrimaryCancerConditionExample01.json").read_text())
    condition = read(isolated, "Condition", sonco_id(engine, source, "Condition", "mCODEPrimaryCancerConditionExample01"))
    assert condition["code"] == primary["code"]
    assert condition["onsetDateTime"] == primary["onsetDateTime"]
    assert condition["meta"]["profile"] == [profile_url("sonco-condition")]

    lung = read(isolated, "Condition", sonco_id(engine, source, "Condition", "frcore-lung-cancer"))
    assert lung["code"]["coding"][0] == {"system": "https://smt.esante.gouv.fr/terminologie-cim-10", "code": "C34.1"}
    assert lung["onsetDateTime"] == "2024-02-12"

    statement = json.loads((MCODE / "MedicationStatement-mCODECancerRelatedMedicationStatementExample01.json").read_text())
    medication = read(isolated, "MedicationStatement",
                      sonco_id(engine, source, "MedicationStatement", "mCODECancerRelatedMedicationStatementExample01"))
    assert medication["medicationCodeableConcept"] == statement["medicationCodeableConcept"]
    assert medication["effectiveDateTime"] == statement["effectiveDateTime"]

    # A prescription and an administration become treatment-line MedicationStatements.
    line = read(isolated, "MedicationStatement", sonco_id(engine, source, "MedicationRequest", "frcore-line1"))
    assert line["status"] == "completed"
    assert line["medicationCodeableConcept"] == {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "349472"}]}
    assert line["effectivePeriod"] == {"start": "2024-03-11", "end": "2024-06-30"}
    assert line["dateAsserted"] == "2024-03-10"
    assert line["reasonReference"] == [{"reference": f"Condition/{lung['id']}"}]
    infusion = read(isolated, "MedicationStatement", sonco_id(engine, source, "MedicationAdministration", "frcore-infusion"))
    assert infusion["status"] == "active"
    assert infusion["effectivePeriod"] == {"start": "2024-07-02T09:00:00+02:00", "end": "2024-07-02T11:30:00+02:00"}
    stay = read(isolated, "Encounter", sonco_id(engine, source, "Encounter", "frcore-stay"))
    assert stay["class"]["code"] == "IMP"
    assert stay["period"] == {"start": "2024-02-12T10:00:00+01:00", "end": "2024-02-15T16:00:00+01:00"}
    assert "identifier" not in stay
    assert stay["reasonReference"] == [{"reference": f"Condition/{lung['id']}"}]

    # A CCAM act keeps its codes as sent, loses its act number, staff and place, and points to the stay.
    ecg = read(isolated, "Procedure", sonco_id(engine, source, "Procedure", "frcore-ecg"))
    assert ecg["code"]["coding"][0] == {"system": "https://smt.esante.gouv.fr/terminologie-ccam", "code": "DEQP003",
                                        "display": "Électrocardiographie sur au moins 12 dérivations"}
    assert len(ecg["code"]["coding"]) == 2
    assert ecg["performedDateTime"] == "2024-02-13T08:30:00+01:00"
    assert ecg["encounter"] == {"reference": f"Encounter/{stay['id']}"}
    assert ecg["reasonReference"] == [{"reference": f"Condition/{lung['id']}"}]
    assert ecg["meta"]["profile"] == [profile_url("sonco-procedure")]
    for element in ("identifier", "performer", "location", "note"):
        assert element not in ecg, element

    # The secondary cancer keeps its link to the primary one, pulled in the same run.
    secondary = read(isolated, "Condition", sonco_id(engine, source, "Condition", "mCODESecondaryCancerConditionExample01"))
    related = [e for e in secondary.get("extension", []) if e["url"].endswith("mcode-related-primary-cancer-condition")]
    assert related[0]["valueReference"]["reference"] == f"Condition/{condition['id']}"

    # Both patients reach the SONCO server with every resource of the source once.
    for source_patient in ("mCODEPatientExample01", FR_CORE_ID):
        pseudonym = cohort_patient(isolated, engine, source, source_patient)
        assert cohort_counts(isolated, pseudonym) == source_counts(ehr, source_patient), source_patient
        # One Procedure each, counted by hand: the mCODE surgical procedure and the seed's ECG.
        assert cohort_counts(isolated, pseudonym)["Procedure"] == 1, source_patient


def test_pull_twice_no_duplicates(ehr, isolated, tmp_path):
    source = write_source(tmp_path, ehr, "https://ehr-twice.test/fhir", [MCODE_IPP])

    first, engine = run_pull(source)
    pseudonym = cohort_patient(isolated, engine, source, "mCODEPatientExample01")
    after_first = cohort_counts(isolated, pseudonym)
    second, _ = run_pull(source, full=True)

    assert second.run.records_loaded == first.run.records_loaded
    assert cohort_counts(isolated, pseudonym) == after_first


def test_incremental_pull_after_changes(ehr, isolated, tmp_path):
    source = write_source(tmp_path, ehr, "https://ehr-incremental.test/fhir", [MCODE_IPP, FR_CORE_INS])
    # Start from the seed, so that the changes below are real changes even when the EHR already ran this test.
    lung = json.loads((EHR_DATA / "seed" / "Condition-frcore-lung-cancer.json").read_text())
    put_all(ehr, [lung])
    requests.delete(f"{ehr}/Observation/frcore-hemoglobin", timeout=60)
    time.sleep(1.5)
    first, engine = run_pull(source)
    assert first.run.problems == []
    # A statement this test creates and then deletes, so other tests keep the seed.
    statement = json.loads((MCODE / "MedicationStatement-mCODECancerRelatedMedicationStatementExample01.json").read_text())
    removed = {"resourceType": "MedicationStatement", "id": "incremental-removed", "status": "completed",
               "medicationCodeableConcept": statement["medicationCodeableConcept"],
               "subject": {"reference": f"Patient/{FR_CORE_ID}"}, "effectiveDateTime": "2024-03-01"}
    put_all(ehr, [removed])
    between, _ = run_pull(source)
    assert between.resources_fetched == 3  # two patients and the new statement

    # Changes at the source: an updated condition, a new observation, a deleted statement.
    lung["clinicalStatus"] = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "remission"}]}
    hemoglobin = json.loads((EHR_DATA / "changes" / "Observation-frcore-hemoglobin.json").read_text())
    put_all(ehr, [lung, hemoglobin])
    assert requests.delete(f"{ehr}/MedicationStatement/incremental-removed", timeout=60).status_code in (200, 204)
    pseudonym = cohort_patient(isolated, engine, source, FR_CORE_ID)
    before = cohort_counts(isolated, pseudonym)
    time.sleep(1.5)  # the next checkpoint (start minus 1 s) then falls after these changes

    report, _ = run_pull(source)

    # Only what changed is fetched: the two patients (always read) and the two changed resources.
    assert report.resources_fetched == 4
    assert report.deleted == [f"{source.system}|MedicationStatement/incremental-removed"]
    updated = read(isolated, "Condition", sonco_id(engine, source, "Condition", "frcore-lung-cancer"))
    assert updated["clinicalStatus"]["coding"][0]["code"] == "remission"
    observation = read(isolated, "Observation", sonco_id(engine, source, "Observation", "frcore-hemoglobin"))
    assert observation["valueQuantity"] == {"value": 11.2, "unit": "g/dL", "system": "http://unitsofmeasure.org", "code": "g/dL"}
    assert observation["subject"]["reference"] == f"Patient/{pseudonym}"
    expected = dict(before, Observation=before["Observation"] + 1)
    assert cohort_counts(isolated, pseudonym) == expected
    # The deletion is reported once: the next run finds nothing new.
    again, _ = run_pull(source)
    assert again.deleted == []
    assert again.resources_fetched == 2


class Interrupted(Exception):
    pass


def test_interrupted_pull_resumes(ehr, isolated, tmp_path):
    source = write_source(tmp_path, ehr, "https://ehr-resume.test/fhir", [MCODE_IPP, FR_CORE_INS])

    def stop_after_first(done: int) -> None:
        if done == 1:
            raise Interrupted()

    with pytest.raises(Interrupted):
        run_pull(source, after_patient=stop_after_first)
    report, engine = run_pull(source)

    assert report.resumed is True
    assert report.patients_already_done == 1
    assert report.patients == 1
    for source_patient in ("mCODEPatientExample01", FR_CORE_ID):
        pseudonym = cohort_patient(isolated, engine, source, source_patient)
        assert cohort_counts(isolated, pseudonym) == source_counts(ehr, source_patient), source_patient
    # The resumed run closed the run: the next one is incremental and fetches only the patients.
    after, _ = run_pull(source)
    assert after.resumed is False
    assert after.resources_fetched == 2


def supports_export(base: str) -> bool:
    statement = requests.get(f"{base}/metadata", headers=FHIR_JSON, timeout=60).json()
    operations = [operation["name"] for rest in statement.get("rest", []) for operation in rest.get("operation", [])]
    operations += [operation["name"] for rest in statement.get("rest", []) for resource in rest.get("resource", [])
                   for operation in resource.get("operation", [])]
    return "export" in operations


def test_group_export_pull(ehr, isolated, tmp_path):
    group = {"resourceType": "Group", "id": "sonco-cohort", "type": "person", "actual": True,
             "member": [{"entity": {"reference": "Patient/mCODEPatientExample01"}}]}
    put_all(ehr, [group])
    source = write_source(tmp_path, ehr, "https://ehr-bulk.test/fhir", [MCODE_IPP], bulk_export={"group": "sonco-cohort"},
                          retry={"max_attempts": 3, "backoff_seconds": 1, "max_wait_seconds": 5})

    report, engine = run_pull(source)

    # The SONCO server registers HAPI's bulk export provider; the fall-back to searches is tested with mocks.
    assert supports_export(ehr)
    assert report.mode == "bulk"
    assert report.bulk_fallback_status is None
    assert report.patients == 1
    assert report.run.problems == []
    pseudonym = cohort_patient(isolated, engine, source, "mCODEPatientExample01")
    assert cohort_counts(isolated, pseudonym) == source_counts(ehr, "mCODEPatientExample01")


def test_known_patients_cohort(ehr, isolated, tmp_path):
    source = write_source(tmp_path, ehr, "https://ehr-known.test/fhir", [MCODE_IPP])
    run_pull(source)
    (tmp_path / "ids.txt").write_text("", encoding="utf-8")
    known = replace(source, identifiers_file=None, known_patients=True)

    report, _ = run_pull(known, full=True)

    # Only the patient linked by the first pull is known to the crosswalk.
    assert report.patients == 1


def test_pulled_resources_validate(ehr, isolated, tmp_path, hapi):
    source = write_source(tmp_path, ehr, "https://ehr-validate.test/fhir", [MCODE_IPP, FR_CORE_INS])
    report, engine = run_pull(source)
    assert report.run.records_loaded > 0

    checked = expected = 0
    for source_patient in ("mCODEPatientExample01", FR_CORE_ID):
        # The Patient, one resource per source resource, and one Provenance per record (Patient included).
        expected += 2 + 2 * sum(source_counts(ehr, source_patient).values())
        pseudonym = cohort_patient(isolated, engine, source, source_patient)
        resources = [read(isolated, "Patient", pseudonym)]
        for name in set(SONCO_TYPES.values()):
            resources += search(isolated, name, subject=f"Patient/{pseudonym}")
        resources += search(isolated, "Provenance", target=f"Patient/{pseudonym}")
        for resource in resources:
            errors = errors_of(validation_issues(hapi, resource, resource["meta"]["profile"][0]))
            assert errors == [], f"{resource['resourceType']}/{resource['id']}: {errors}"
            checked += 1
    assert checked == expected


def test_pull_command_reports(ehr, isolated, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from sonco_fhir import i18n
    from sonco_fhir.cli.main import build_app

    write_source(tmp_path, ehr, "https://ehr-cli.test/fhir", [MCODE_IPP, "http://hospital.example.org|none"])
    monkeypatch.setenv("SONCO_FHIR_SOURCES_DIR", str(tmp_path))
    i18n.set_language("en")

    first = CliRunner().invoke(build_app(), ["--lang", "en", "pull", "fhir", "--source", "ehr"])
    second = CliRunner().invoke(build_app(), ["--lang", "en", "pull", "fhir", "--source", "ehr"])

    assert first.exit_code == 0, first.output
    assert "Source ehr: " + ehr in first.output
    assert "Pull (per-patient searches): 1 patient(s)" in first.output
    assert "1 identifier(s) not found" in first.output
    assert "m123" not in first.output
    # The second run is incremental: the patient only, read again.
    assert second.exit_code == 0, second.output
    assert "Pull (per-patient searches): 1 patient(s), 1 resource(s) fetched" in second.output


def test_pull_command_unknown_source(isolated, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from sonco_fhir.cli.main import build_app

    monkeypatch.setenv("SONCO_FHIR_SOURCES_DIR", str(tmp_path))

    result = CliRunner().invoke(build_app(), ["--lang", "en", "pull", "fhir", "--source", "nowhere"])

    assert result.exit_code == 3
    assert "FHIR source 'nowhere' not found" in result.output
