"""SPICE and HYGEN exports: connector checks and mappings, run on the example exports.

Expected values are read by hand from examples/spice/*.csv and
examples/hygen/*.json; a change to those files must change these tests.
"""

import csv
import json
import shutil
import statistics
from datetime import date
from pathlib import Path

import pytest
import yaml
from fhir.resources.R4B import get_fhir_model_class

from sonco_fhir import i18n
from sonco_fhir.config import REPOSITORY, load_settings
from sonco_fhir.pipeline import build_engine, map_source, merged_bundle

TEST_KEY = "0123456789abcdef" * 4
SPICE_DIR = REPOSITORY / "examples" / "spice"
HYGEN_DIR = REPOSITORY / "examples" / "hygen"
SPICE_DEMANDES = SPICE_DIR / "spice_demandes_20240702.csv"
SPICE_PRELEVEMENTS = SPICE_DIR / "spice_prelevements_20240702.csv"
HYGEN_EXPORT = HYGEN_DIR / "hygen_export_20240624.json"

SONCO_CS = "https://sonco.example/fhir/CodeSystem/"
ANS_TEST_INS = "279035121518989"


@pytest.fixture
def settings(monkeypatch, tmp_path):
    monkeypatch.setenv("SONCO_PSEUDONYM_KEY", TEST_KEY)
    monkeypatch.setenv("SONCO_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("SONCO_MAPPINGS_DIR", raising=False)
    monkeypatch.setattr(i18n, "_current", "en")
    return load_settings()


@pytest.fixture
def engine(settings):
    return build_engine(settings, read_only=True)


def run(kind, paths, settings, engine):
    mapped, summary = map_source(kind, [Path(path) for path in paths], settings, engine)
    resources = [entry["resource"] for entry in merged_bundle(mapped)["entry"]]
    return resources, summary


def of_type(resources, resource_type):
    return [resource for resource in resources if resource["resourceType"] == resource_type]


def by_identifier(resources, resource_type, value):
    found = [r for r in of_type(resources, resource_type) if any(i.get("value") == value for i in r.get("identifier", []))]
    assert len(found) == 1, f"expected one {resource_type} with identifier {value}, found {len(found)}"
    return found[0]


def reference(resource):
    return f"{resource['resourceType']}/{resource['id']}"


def pointing_to(resources, resource_type, path, target):
    """The resources of a type whose element `path` (a Reference or list of them) points to `target`."""
    wanted = reference(target)
    matches = []
    for resource in of_type(resources, resource_type):
        value = resource.get(path)
        references = value if isinstance(value, list) else [value]
        if any(isinstance(ref, dict) and ref.get("reference") == wanted for ref in references):
            matches.append(resource)
    return matches


def codes(codeable):
    return {(coding["system"], coding["code"]) for coding in codeable["coding"]}


@pytest.fixture
def spice(settings, engine):
    resources, summary = run("spice", [SPICE_DIR], settings, engine)
    assert summary.problems == []
    return resources


@pytest.fixture
def hygen(settings, engine):
    resources, summary = run("hygen", [HYGEN_DIR], settings, engine)
    assert summary.problems == []
    return resources


def write_csv(path: Path, header: list[str], rows: list[list[str]], delimiter=";", encoding="utf-8"):
    lines = [delimiter.join(header)] + [delimiter.join(row) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding=encoding)
    return path


def read_spice(path: Path):
    with open(path, encoding="utf-8-sig", newline="") as handle:
        rows = list(csv.reader(handle, delimiter=";"))
    return rows[0], rows[1:]


# --- SPICE examples ---


def test_spice_examples_map_every_row(settings, engine):
    _, summary = run("spice", [SPICE_DIR], settings, engine)
    assert summary.problems == []
    # 7 demandes, 11 prelevements, 3 requests with findings, 4 comptes_rendus, 3 rcp_aval.
    assert summary.records_read == 28
    assert summary.records_mapped == 28


def test_spice_lab_organization(spice):
    organizations = of_type(spice, "Organization")
    assert len(organizations) == 1
    assert organizations[0]["name"] == "LBM-FMG SeqOIA"
    assert organizations[0]["meta"]["profile"] == ["https://sonco.example/fhir/StructureDefinition/sonco-organization"]


def test_spice_lab_organization_key(spice, engine):
    expected_id = engine.pseudonymiser.resource_id("Organization", "organization", "lab", "SeqOIA")
    assert of_type(spice, "Organization")[0]["id"] == expected_id


def test_spice_service_request(spice):
    request = by_identifier(spice, "ServiceRequest", "DEM-2024-00871")
    lab = of_type(spice, "Organization")[0]
    assert request["identifier"][0]["system"] == "https://sonco.example/fhir/NamingSystem/spice-request"
    assert request["authoredOn"] == "2024-01-08"
    assert request["status"] == "completed"
    assert request["intent"] == "order"
    assert codes(request["code"]) == {("http://loinc.org", "86206-0")}
    assert codes(request["reasonCode"][0]) == {(SONCO_CS + "sonco-pfmg-preindication", "pancreatic-cancer")}
    assert request["performer"] == [{"reference": reference(lab), "display": "SeqOIA"}]
    assert request["meta"]["profile"] == ["https://sonco.example/fhir/StructureDefinition/sonco-servicerequest"]


@pytest.mark.parametrize(
    ("number", "status"),
    [("DEM-2024-01342", "active"), ("DEM-2024-01187", "active"), ("DEM-2024-00958", "active"),
     ("DEM-2024-01012", "completed"), ("DEM-2024-00905", "completed")],
)
def test_spice_request_status(spice, number, status):
    assert by_identifier(spice, "ServiceRequest", number)["status"] == status


def test_spice_wes_request_code(spice):
    request = by_identifier(spice, "ServiceRequest", "DEM-2024-01012")
    assert codes(request["code"]) == {("http://loinc.org", "86205-2")}
    assert codes(request["reasonCode"][0]) == {(SONCO_CS + "sonco-pfmg-preindication", "other-cancer")}


def test_spice_rcp_amont_task(spice):
    request = by_identifier(spice, "ServiceRequest", "DEM-2024-00871")
    tasks = pointing_to(spice, "Task", "focus", request)
    assert len(tasks) == 1
    task = tasks[0]
    assert task["status"] == "completed"
    assert task["intent"] == "order"
    assert codes(task["code"]) == {(SONCO_CS + "sonco-pathway-milestone", "rcp-amont-validation")}
    assert task["businessStatus"]["text"] == "validée"
    assert task["executionPeriod"]["end"] == "2024-01-15"
    assert task["for"] == request["subject"]


def test_spice_rcp_amont_decision_defaults_to_validated(spice):
    request = by_identifier(spice, "ServiceRequest", "DEM-2024-01187")
    task = pointing_to(spice, "Task", "focus", request)[0]
    assert task["businessStatus"]["text"] == "validée"
    assert task["executionPeriod"]["end"] == "2024-02-26"


def test_spice_no_task_before_rcp_amont(spice):
    request = by_identifier(spice, "ServiceRequest", "DEM-2024-01342")
    assert pointing_to(spice, "Task", "focus", request) == []


def test_spice_frozen_tumour_specimen(spice):
    request = by_identifier(spice, "ServiceRequest", "DEM-2024-00871")
    specimen = by_identifier(spice, "Specimen", "PRL-24-01533")
    assert codes(specimen["type"]) == {("http://terminology.hl7.org/CodeSystem/v2-0487", "TUMOR")}
    assert codes(specimen["processing"][0]["procedure"]) == {(SONCO_CS + "sonco-sample-preservation", "frozen")}
    assert specimen["receivedTime"] == "2024-01-19T10:12:00+01:00"
    assert specimen["collection"]["collectedDateTime"] == "2024-01-17T09:30:00+01:00"
    assert specimen["request"] == [{"reference": reference(request)}]
    assert specimen["subject"] == request["subject"]


def test_spice_ffpe_and_blood_specimens(spice):
    ffpe = by_identifier(spice, "Specimen", "PRL-24-01790")
    blood = by_identifier(spice, "Specimen", "PRL-24-01791")
    assert codes(ffpe["processing"][0]["procedure"]) == {(SONCO_CS + "sonco-sample-preservation", "ffpe")}
    assert ffpe["collection"]["collectedDateTime"] == "2023-12-12"
    assert codes(blood["type"]) == {("http://terminology.hl7.org/CodeSystem/v2-0487", "BLD")}
    assert "processing" not in blood


def test_spice_report(spice):
    request = by_identifier(spice, "ServiceRequest", "DEM-2024-00871")
    reports = pointing_to(spice, "DiagnosticReport", "basedOn", request)
    assert len(reports) == 1
    report = reports[0]
    lab = of_type(spice, "Organization")[0]
    assert report["status"] == "final"
    assert report["issued"] == "2024-03-26T14:10:00+01:00"
    assert codes(report["code"]) == {("http://loinc.org", "51969-4")}
    assert codes(report["category"][0]) == {("http://terminology.hl7.org/CodeSystem/v2-0074", "GE")}
    assert report["performer"] == [{"reference": reference(lab), "display": "SeqOIA"}]
    assert report["subject"] == request["subject"]
    assert report["conclusion"].startswith("Variant somatique KRAS")
    specimens = {ref["reference"] for ref in report["specimen"]}
    expected = {reference(by_identifier(spice, "Specimen", number)) for number in ("PRL-24-01533", "PRL-24-01534")}
    assert specimens == expected


def test_spice_amended_report(spice):
    request = by_identifier(spice, "ServiceRequest", "DEM-2024-00905")
    report = pointing_to(spice, "DiagnosticReport", "basedOn", request)[0]
    assert report["status"] == "amended"
    assert report["issued"] == "2024-04-29T09:30:00+02:00"


def test_spice_report_date_only_issued_at_noon(spice):
    request = by_identifier(spice, "ServiceRequest", "DEM-2024-01012")
    report = pointing_to(spice, "DiagnosticReport", "basedOn", request)[0]
    assert report["issued"] == "2024-06-17T12:00:00+02:00"


def test_spice_targeted_therapy_careplan(spice):
    request = by_identifier(spice, "ServiceRequest", "DEM-2024-00871")
    report = pointing_to(spice, "DiagnosticReport", "basedOn", request)[0]
    plans = pointing_to(spice, "CarePlan", "supportingInfo", report)
    assert len(plans) == 1
    plan = plans[0]
    assert plan["status"] == "active"
    assert plan["intent"] == "plan"
    assert codes(plan["category"][0]) == {(SONCO_CS + "sonco-pathway-milestone", "rcp-aval")}
    assert plan["created"] == "2024-04-09"
    assert plan["subject"] == request["subject"]
    assert len(plan["activity"]) == 1
    detail = plan["activity"][0]["detail"]
    assert codes(detail["code"]) == {(SONCO_CS + "sonco-rcp-recommendation", "targeted-therapy")}
    assert detail["status"] == "not-started"
    assert detail["productCodeableConcept"]["text"] == "sotorasib"


def test_spice_clinical_trial_careplan(spice):
    request = by_identifier(spice, "ServiceRequest", "DEM-2024-00905")
    report = pointing_to(spice, "DiagnosticReport", "basedOn", request)[0]
    detail = pointing_to(spice, "CarePlan", "supportingInfo", report)[0]["activity"][0]["detail"]
    assert codes(detail["code"]) == {(SONCO_CS + "sonco-rcp-recommendation", "clinical-trial")}
    assert detail["description"] == "NCT09990001"
    assert "productCodeableConcept" not in detail


def test_spice_no_actionable_careplan(spice):
    request = by_identifier(spice, "ServiceRequest", "DEM-2024-01012")
    report = pointing_to(spice, "DiagnosticReport", "basedOn", request)[0]
    detail = pointing_to(spice, "CarePlan", "supportingInfo", report)[0]["activity"][0]["detail"]
    assert codes(detail["code"]) == {(SONCO_CS + "sonco-rcp-recommendation", "no-actionable-alteration")}


def test_spice_provenance(spice):
    provenances = of_type(spice, "Provenance")
    assert len(provenances) == 28
    assert {p["agent"][1]["who"]["display"] for p in provenances} == {"SPICE (SeqOIA)"}
    recorded = {p["recorded"] for p in provenances}
    assert "2024-03-26T14:12:00+01:00" in recorded  # demandes row of DEM-2024-00871
    assert "2024-07-02T09:12:00+02:00" in recorded  # rcp_aval row of DEM-2024-01012


def test_spice_patient_links_to_hl7_feed(spice, engine):
    """The ANS test patient gets the Patient named after its INS, which its IPP in the ADT feed also reaches."""
    request = by_identifier(spice, "ServiceRequest", "DEM-2024-00871")
    ins_token = engine.pseudonymiser.token("INS-NIR", "", ANS_TEST_INS)
    ipp_token = engine.pseudonymiser.token("IPP", "000897406", "000003")
    assert request["subject"]["reference"] == f"Patient/{ins_token}"
    assert engine.crosswalk.resolve([("IPP", ipp_token)]) == ins_token


def test_spice_rows_of_one_patient_share_subject(spice):
    request = by_identifier(spice, "ServiceRequest", "DEM-2024-00871")
    subject = request["subject"]
    assert by_identifier(spice, "Specimen", "PRL-24-01533")["subject"] == subject
    report = pointing_to(spice, "DiagnosticReport", "basedOn", request)[0]
    assert report["subject"] == subject
    assert pointing_to(spice, "CarePlan", "supportingInfo", report)[0]["subject"] == subject


def test_spice_files_in_any_order_link_patient(settings, engine):
    resources, summary = run("spice", [SPICE_PRELEVEMENTS, SPICE_DEMANDES], settings, engine)
    assert summary.problems == []
    request = by_identifier(resources, "ServiceRequest", "DEM-2024-00871")
    assert by_identifier(resources, "Specimen", "PRL-24-01533")["subject"] == request["subject"]


# --- HYGEN examples ---


def test_hygen_examples_map_every_record(settings, engine):
    _, summary = run("hygen", [HYGEN_DIR], settings, engine)
    assert summary.problems == []
    assert summary.records_read == 7
    assert summary.records_mapped == 7


def test_hygen_lab_organization(hygen, engine):
    organizations = of_type(hygen, "Organization")
    assert len(organizations) == 1
    assert organizations[0]["name"] == "LBM-FMG AURAGEN"
    assert organizations[0]["id"] == engine.pseudonymiser.resource_id("Organization", "organization", "lab", "AURAGEN")


def test_hygen_service_request(hygen):
    request = by_identifier(hygen, "ServiceRequest", "HYG-24-0312")
    lab = of_type(hygen, "Organization")[0]
    assert request["identifier"][0]["system"] == "https://sonco.example/fhir/NamingSystem/hygen-request"
    assert request["authoredOn"] == "2024-01-10"
    assert request["status"] == "completed"
    assert codes(request["code"]) == {("http://loinc.org", "86206-0")}
    assert request["performer"] == [{"reference": reference(lab), "display": "AURAGEN"}]


def test_hygen_rna_seq_request(hygen):
    request = by_identifier(hygen, "ServiceRequest", "HYG-24-0451")
    assert codes(request["code"]) == {(SONCO_CS + "sonco-sequencing-test", "rna-seq")}
    assert codes(request["reasonCode"][0]) == {(SONCO_CS + "sonco-pfmg-preindication", "cancer-unknown-primary")}


def test_hygen_two_requests_one_patient(hygen):
    genome = by_identifier(hygen, "ServiceRequest", "HYG-24-0450")
    transcriptome = by_identifier(hygen, "ServiceRequest", "HYG-24-0451")
    assert genome["subject"] == transcriptome["subject"]
    assert len(of_type(hygen, "Patient")) == 6


def test_hygen_specimens(hygen):
    request = by_identifier(hygen, "ServiceRequest", "HYG-24-0312")
    tumour = by_identifier(hygen, "Specimen", "ECH-AU-24-2207")
    assert codes(tumour["type"]) == {("http://terminology.hl7.org/CodeSystem/v2-0487", "TUMOR")}
    assert codes(tumour["processing"][0]["procedure"]) == {(SONCO_CS + "sonco-sample-preservation", "frozen")}
    assert tumour["receivedTime"] == "2024-01-24T09:00:00+01:00"
    assert tumour["collection"]["collectedDateTime"] == "2024-01-22T10:15:00+01:00"
    assert tumour["request"] == [{"reference": reference(request)}]
    ffpe = by_identifier(hygen, "Specimen", "ECH-AU-24-2460")
    assert codes(ffpe["processing"][0]["procedure"]) == {(SONCO_CS + "sonco-sample-preservation", "ffpe")}


def test_hygen_report(hygen):
    request = by_identifier(hygen, "ServiceRequest", "HYG-24-0312")
    report = pointing_to(hygen, "DiagnosticReport", "basedOn", request)[0]
    assert report["status"] == "final"
    assert report["issued"] == "2024-03-19T16:20:00+01:00"
    assert report["performer"][0]["display"] == "AURAGEN"
    assert len(report["specimen"]) == 2


def test_hygen_targeted_therapy_and_referral(hygen):
    request = by_identifier(hygen, "ServiceRequest", "HYG-24-0312")
    report = pointing_to(hygen, "DiagnosticReport", "basedOn", request)[0]
    plan = pointing_to(hygen, "CarePlan", "supportingInfo", report)[0]
    assert plan["created"] == "2024-04-02"
    details = [activity["detail"] for activity in plan["activity"]]
    assert [codes(detail["code"]) for detail in details] == [
        {(SONCO_CS + "sonco-rcp-recommendation", "targeted-therapy")},
        {(SONCO_CS + "sonco-rcp-recommendation", "oncogenetics-referral")},
    ]
    assert details[0]["productCodeableConcept"]["text"] == "olaparib"
    assert "productCodeableConcept" not in details[1]


def test_hygen_clinical_trial(hygen):
    request = by_identifier(hygen, "ServiceRequest", "HYG-24-0450")
    report = pointing_to(hygen, "DiagnosticReport", "basedOn", request)[0]
    detail = pointing_to(hygen, "CarePlan", "supportingInfo", report)[0]["activity"][0]["detail"]
    assert codes(detail["code"]) == {(SONCO_CS + "sonco-rcp-recommendation", "clinical-trial")}
    assert detail["description"] == "NCT09990002"


def test_hygen_failed_sequencing(hygen):
    request = by_identifier(hygen, "ServiceRequest", "HYG-24-0488")
    assert request["status"] == "revoked"
    assert pointing_to(hygen, "DiagnosticReport", "basedOn", request) == []
    failures = [task for task in pointing_to(hygen, "Task", "focus", request) if task["status"] == "failed"]
    assert len(failures) == 1
    failure = failures[0]
    assert codes(failure["code"]) == {(SONCO_CS + "sonco-pathway-milestone", "sequencing")}
    assert codes(failure["statusReason"]) == {(SONCO_CS + "sonco-sequencing-failure-reason", "low-tumour-cellularity")}
    assert failure["executionPeriod"]["end"] == "2024-04-08T14:00:00+02:00"


def test_hygen_refused_request(hygen):
    request = by_identifier(hygen, "ServiceRequest", "HYG-24-0561")
    assert request["status"] == "revoked"
    task = pointing_to(hygen, "Task", "focus", request)[0]
    assert task["businessStatus"]["text"] == "refusée"
    assert task["executionPeriod"]["end"] == "2024-03-25"


def test_hygen_provenance(hygen):
    provenances = of_type(hygen, "Provenance")
    assert len(provenances) == 7
    assert {p["agent"][1]["who"]["display"] for p in provenances} == {"HYGEN (AURAGEN)"}
    assert "2024-04-02T18:30:00+02:00" in {p["recorded"] for p in provenances}


# --- properties of the whole output ---


def example_identifiers() -> list[str]:
    """Every INS, IPP and platform patient id of the example exports."""
    values = []
    for path in SPICE_DIR.glob("*.csv"):
        header, rows = read_spice(path)
        for column in ("ins_nir", "ipp", "id_patient_spice"):
            if column in header:
                values += [row[header.index(column)] for row in rows]
    for record in json.loads(HYGEN_EXPORT.read_text(encoding="utf-8"))["dossiers"]:
        values += [value for value in record["patient"].values()]
    return sorted({value for value in values if value})


def test_example_identifiers_found():
    identifiers = example_identifiers()
    assert ANS_TEST_INS in identifiers
    assert "000003" in identifiers
    # SPICE: 7 patients, 3 identifiers each, but S4 and S7 have no INS-NIR; HYGEN: 6 patients.
    assert len(identifiers) == 7 * 3 - 2 + 6 * 3


@pytest.mark.parametrize("kind", ["spice", "hygen"])
def test_no_patient_identifier_in_output(settings, engine, kind):
    resources, summary = run(kind, [SPICE_DIR if kind == "spice" else HYGEN_DIR], settings, engine)
    assert summary.problems == []
    text = json.dumps(resources, ensure_ascii=False)
    leaked = [value for value in example_identifiers() if value in text]
    assert leaked == []


@pytest.mark.parametrize("kind", ["spice", "hygen"])
def test_resources_valid_fhir_r4(settings, engine, kind):
    resources, _ = run(kind, [SPICE_DIR if kind == "spice" else HYGEN_DIR], settings, engine)
    for resource in resources:
        get_fhir_model_class(resource["resourceType"]).model_validate(resource)


@pytest.mark.parametrize("kind", ["spice", "hygen"])
def test_subjects_are_bundle_patients(settings, engine, kind):
    resources, _ = run(kind, [SPICE_DIR if kind == "spice" else HYGEN_DIR], settings, engine)
    patients = {reference(patient) for patient in of_type(resources, "Patient")}
    for resource in resources:
        for element in ("subject", "for"):
            if element in resource:
                assert resource[element]["reference"] in patients, f"{resource['resourceType']}.{element}"


def indicator_values(resources):
    """Days from prescription to report per request, and (patients with a matched recommendation, with a report)."""
    requests = {reference(r): r for r in of_type(resources, "ServiceRequest")}
    delays = {}
    with_report = set()
    for report in of_type(resources, "DiagnosticReport"):
        if report["status"] not in ("final", "amended"):
            continue
        request = requests[report["basedOn"][0]["reference"]]
        issued = date.fromisoformat(report["issued"][:10])
        delays[request["identifier"][0]["value"]] = (issued - date.fromisoformat(request["authoredOn"])).days
        with_report.add(report["subject"]["reference"])
    matched = set()
    for plan in of_type(resources, "CarePlan"):
        recommended = {code for activity in plan["activity"] for _, code in codes(activity["detail"]["code"])}
        if recommended & {"targeted-therapy", "clinical-trial"}:
            matched.add(plan["subject"]["reference"])
    return delays, matched & with_report, with_report


def test_spice_indicator_values(spice):
    delays, matched, with_report = indicator_values(spice)
    assert delays == {"DEM-2024-00871": 78, "DEM-2024-00905": 98, "DEM-2024-01012": 126}
    assert statistics.median(delays.values()) == 98
    assert (len(matched), len(with_report)) == (2, 3)


def test_hygen_indicator_values(hygen):
    delays, matched, with_report = indicator_values(hygen)
    assert delays == {"HYG-24-0312": 69, "HYG-24-0450": 85, "HYG-24-0451": 71, "HYG-24-0533": 84, "HYG-24-0590": 87}
    assert statistics.median(delays.values()) == 84
    assert (len(matched), len(with_report)) == (2, 4)


# --- bad input ---


def test_missing_required_value(settings, engine, tmp_path):
    header, rows = read_spice(SPICE_DEMANDES)
    rows[1][header.index("date_prescription")] = ""
    path = write_csv(tmp_path / "spice_demandes_20240703.csv", header, rows)
    resources, summary = run("spice", [path], settings, engine)
    assert len(summary.problems) == 1
    problem = summary.problems[0]
    assert problem.source == str(path)
    assert problem.location == "line 3, column date_prescription"
    assert problem.message == "required value missing"
    assert "date_prescription" in problem.fix
    assert summary.records_mapped == 6
    assert len(of_type(resources, "ServiceRequest")) == 6


def test_problem_never_shows_row_values(settings, engine, tmp_path):
    header, rows = read_spice(SPICE_DEMANDES)
    rows[0][header.index("ins_nir")] = "279035121518988"  # wrong control key
    rows[0][header.index("date_prescription")] = "32/01/2024"
    path = write_csv(tmp_path / "spice_demandes_20240703.csv", header, rows)
    _, summary = run("spice", [path], settings, engine)
    assert len(summary.problems) == 1
    rendered = summary.problems[0].render()
    assert summary.problems[0].location == "line 2, columns ins_nir, date_prescription"
    for value in rows[0]:
        if len(value) >= 4 and value not in header:
            assert value not in rendered


def test_missing_required_column(settings, engine, tmp_path):
    header, rows = read_spice(SPICE_DEMANDES)
    column = header.index("type_analyse")
    path = write_csv(tmp_path / "spice_demandes_20240703.csv",
                     header[:column] + header[column + 1:], [row[:column] + row[column + 1:] for row in rows])
    resources, summary = run("spice", [path], settings, engine)
    assert len(summary.problems) == 1
    assert summary.problems[0].location == "header (line 1)"
    assert "type_analyse" in summary.problems[0].message
    assert resources == []


def test_missing_optional_column(settings, engine, tmp_path):
    header, rows = read_spice(SPICE_DEMANDES)
    column = header.index("decision_rcp_amont")
    path = write_csv(tmp_path / "spice_demandes_20240703.csv",
                     header[:column] + header[column + 1:], [row[:column] + row[column + 1:] for row in rows])
    _, summary = run("spice", [path], settings, engine)
    assert summary.problems == []
    assert summary.records_mapped == 7


def test_unknown_file_name(settings, engine, tmp_path):
    path = tmp_path / "spice_patients_20240703.csv"
    shutil.copy(SPICE_DEMANDES, path)
    resources, summary = run("spice", [path, SPICE_DEMANDES], settings, engine)
    assert len(summary.problems) == 1
    problem = summary.problems[0]
    assert problem.source == str(path)
    assert problem.location == "file"
    assert "matches no SPICE export file" in problem.message
    assert "spice_demandes_*.csv" in problem.fix
    assert summary.records_mapped == 7


def test_bad_date(settings, engine, tmp_path):
    header, rows = read_spice(SPICE_DEMANDES)
    rows[3][header.index("date_prescription")] = "30/02/2024"
    path = write_csv(tmp_path / "spice_demandes_20240703.csv", header, rows)
    _, summary = run("spice", [path], settings, engine)
    assert len(summary.problems) == 1
    assert summary.problems[0].location == "line 5, column date_prescription"
    assert summary.problems[0].message == "invalid date"
    assert "JJ/MM/AAAA" in summary.problems[0].fix
    assert summary.records_mapped == 6


def test_partial_date(settings, engine, tmp_path):
    header, rows = read_spice(SPICE_DEMANDES)
    rows[0][header.index("date_prescription")] = "2024"
    path = write_csv(tmp_path / "spice_demandes_20240703.csv", header, rows)
    _, summary = run("spice", [path], settings, engine)
    assert summary.problems[0].message == "incomplete date"


def test_value_not_in_contract(settings, engine, tmp_path):
    header, rows = read_spice(SPICE_DEMANDES)
    rows[0][header.index("type_analyse")] = "panel"
    path = write_csv(tmp_path / "spice_demandes_20240703.csv", header, rows)
    _, summary = run("spice", [path], settings, engine)
    assert summary.problems[0].location == "line 2, column type_analyse"
    assert summary.problems[0].fix == "use one of: WGS, WES, RNA-seq"


def test_invalid_ins_control_key(settings, engine, tmp_path):
    header, rows = read_spice(SPICE_DEMANDES)
    rows[0][header.index("ins_nir")] = ANS_TEST_INS[:-2] + "88"
    path = write_csv(tmp_path / "spice_demandes_20240703.csv", header, rows)
    _, summary = run("spice", [path], settings, engine)
    assert summary.problems[0].location == "line 2, column ins_nir"
    assert summary.problems[0].message == "not a valid INS-NIR"


def test_coded_values_ignore_case_and_accents(settings, engine, tmp_path):
    header, rows = read_spice(SPICE_PRELEVEMENTS)
    rows[0][header.index("conservation")] = "Congelé"
    rows[0][header.index("type_prelevement")] = "TUMORAL"
    path = write_csv(tmp_path / "spice_prelevements_20240703.csv", header, rows)
    resources, summary = run("spice", [SPICE_DEMANDES, path], settings, engine)
    assert summary.problems == []
    specimen = by_identifier(resources, "Specimen", "PRL-24-01533")
    assert codes(specimen["processing"][0]["procedure"]) == {(SONCO_CS + "sonco-sample-preservation", "frozen")}


def test_comma_delimiter_rejected(settings, engine, tmp_path):
    header, rows = read_spice(SPICE_DEMANDES)
    path = write_csv(tmp_path / "spice_demandes_20240703.csv", header, rows, delimiter=",")
    _, summary = run("spice", [path], settings, engine)
    assert len(summary.problems) == 1
    assert "separated by ','" in summary.problems[0].message
    assert "';'" in summary.problems[0].fix


def test_latin1_file_rejected(settings, engine, tmp_path):
    header, rows = read_spice(SPICE_PRELEVEMENTS)
    rows[2][header.index("conservation")] = "congelé"
    path = write_csv(tmp_path / "spice_prelevements_20240703.csv", header, rows, encoding="latin-1")
    _, summary = run("spice", [path], settings, engine)
    assert len(summary.problems) == 1
    assert summary.problems[0].location == "line 4"
    assert "UTF-8" in summary.problems[0].message


def test_byte_order_mark_accepted(settings, engine):
    assert SPICE_PRELEVEMENTS.read_bytes().startswith(b"\xef\xbb\xbf")
    _, summary = run("spice", [SPICE_DEMANDES, SPICE_PRELEVEMENTS], settings, engine)
    assert summary.problems == []
    assert summary.records_mapped == 18  # 7 requests and 11 samples


def test_wrong_number_of_values(settings, engine, tmp_path):
    header, rows = read_spice(SPICE_DEMANDES)
    rows[2] = rows[2] + ["extra"]
    path = write_csv(tmp_path / "spice_demandes_20240703.csv", header, rows)
    _, summary = run("spice", [path], settings, engine)
    assert len(summary.problems) == 1
    assert summary.problems[0].location == "line 4"
    assert summary.problems[0].message == f"{len(header) + 1} values but the header has {len(header)} columns"
    assert summary.records_mapped == 6


def test_duplicate_row_in_file(settings, engine, tmp_path):
    header, rows = read_spice(SPICE_DEMANDES)
    path = write_csv(tmp_path / "spice_demandes_20240703.csv", header, rows + [rows[0]])
    _, summary = run("spice", [path], settings, engine)
    assert len(summary.problems) == 1
    assert summary.problems[0].location == "line 9"
    assert summary.problems[0].message == "same numero_demande as line 2; this row is set aside"


def test_quoted_line_break_keeps_line_numbers(settings, engine, tmp_path):
    text = (SPICE_DIR / "spice_comptes_rendus_20240702.csv").read_text(encoding="utf-8")
    text = text.replace("VAF 28 %.", "VAF 28 %.\nSuite du texte.", 1)
    text = text.replace("DEM-2024-01012;PAT-SQ-6K1W8;valide;17/06/2024", "DEM-2024-01012;PAT-SQ-6K1W8;valide;", 1)
    path = tmp_path / "spice_comptes_rendus_20240703.csv"
    path.write_text(text, encoding="utf-8")
    _, summary = run("spice", [SPICE_DEMANDES, path], settings, engine)
    assert [problem.location for problem in summary.problems] == ["line 5, column date_compte_rendu"]


def test_hygen_missing_nested_value(settings, engine, tmp_path):
    document = json.loads(HYGEN_EXPORT.read_text(encoding="utf-8"))
    del document["dossiers"][0]["prelevements"][1]["type_prelevement"]
    path = tmp_path / "hygen_export_20240625.json"
    path.write_text(json.dumps(document, ensure_ascii=False), encoding="utf-8")
    resources, summary = run("hygen", [path], settings, engine)
    assert len(summary.problems) == 1
    problem = summary.problems[0]
    assert problem.source == str(path)
    assert problem.location == "record 1, field prelevements[1].type_prelevement"
    assert problem.message == "required value missing"
    assert summary.records_mapped == 6
    assert len(of_type(resources, "ServiceRequest")) == 6


def test_hygen_bad_date(settings, engine, tmp_path):
    document = json.loads(HYGEN_EXPORT.read_text(encoding="utf-8"))
    document["dossiers"][2]["compte_rendu"]["date_compte_rendu"] = "2024-04-31T10:00:00+02:00"
    path = tmp_path / "hygen_export_20240625.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    _, summary = run("hygen", [path], settings, engine)
    assert len(summary.problems) == 1
    assert summary.problems[0].location == "record 3, field compte_rendu.date_compte_rendu"
    assert "AAAA-MM-JJ" in summary.problems[0].fix


def test_hygen_wrong_type(settings, engine, tmp_path):
    document = json.loads(HYGEN_EXPORT.read_text(encoding="utf-8"))
    document["dossiers"][0]["prelevements"] = {"numero_prelevement": "ECH-AU-24-2207"}
    path = tmp_path / "hygen_export_20240625.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    _, summary = run("hygen", [path], settings, engine)
    assert summary.problems[0].location == "record 1, field prelevements"
    assert summary.problems[0].message == "must be a list"


def test_hygen_invalid_json(settings, engine, tmp_path):
    path = tmp_path / "hygen_export_20240625.json"
    path.write_text('{"dossiers": [\n{"numero_demande": "X"\n]}', encoding="utf-8")
    _, summary = run("hygen", [path], settings, engine)
    assert len(summary.problems) == 1
    assert summary.problems[0].location == "line 3"
    assert summary.problems[0].message.startswith("invalid JSON")


def test_hygen_records_list_missing(settings, engine, tmp_path):
    path = tmp_path / "hygen_export_20240625.json"
    path.write_text('{"format": "HYGEN-SONCO"}', encoding="utf-8")
    _, summary = run("hygen", [path], settings, engine)
    assert summary.problems[0].location == "file"
    assert "'dossiers'" in summary.problems[0].message


def test_problems_in_french(settings, engine, tmp_path, monkeypatch):
    monkeypatch.setattr(i18n, "_current", "fr")
    header, rows = read_spice(SPICE_DEMANDES)
    rows[1][header.index("date_prescription")] = ""
    path = write_csv(tmp_path / "spice_demandes_20240703.csv", header, rows)
    _, summary = run("spice", [path], settings, engine)
    assert summary.problems[0].location == "ligne 3, colonne date_prescription"
    assert summary.problems[0].message == "valeur obligatoire absente"
    assert summary.problems[0].fix == "renseignez date_prescription dans SPICE, puis exportez de nouveau"


# --- the contracts, their code tables and their documentation ---


def contract_fields(fields, prefix=""):
    for spec in fields:
        path = f"{prefix}{spec['name']}"
        yield path, spec
        nested = "[]." if spec.get("type") == "list" else "."
        yield from contract_fields(spec.get("fields", []), f"{path}{nested}")


# Coded fields, by the last part of their path, and the ConceptMap that maps their values.
CODE_TABLES = {
    "type_analyse": "spice-hygen-analysis-type",
    "analyse_realisee": "spice-hygen-analysis-type",
    "preindication": "spice-hygen-preindication",
    "type_prelevement": "spice-hygen-sample-type",
    "conservation": "spice-hygen-sample-preservation",
    "recommandation": "spice-hygen-rcp-recommendation",
    "recommandations[].type": "spice-hygen-rcp-recommendation",
    "motif_echec": "spice-hygen-sequencing-failure-reason",
    "origine": "spice-hygen-genomic-source-class",
    "statut_msi": "spice-hygen-msi-status",
    "effet": "spice-hygen-therapeutic-effect",
}


def code_table(path: str) -> str | None:
    return next((table for suffix, table in CODE_TABLES.items() if path == suffix or path.endswith("." + suffix)), None)


@pytest.mark.parametrize("kind", ["spice", "hygen"])
def test_contract_values_have_codes(engine, kind):
    contract = yaml.safe_load((REPOSITORY / "connectors" / f"{kind}.yaml").read_text(encoding="utf-8"))
    checked = 0
    for file_spec in contract["files"]:
        for path, spec in contract_fields(file_spec["fields"]):
            table = code_table(path)
            if table is None:
                continue
            for value in spec["values"]:
                assert engine.conceptmaps.translate(table, value), f"{path}: no code for {value} in {table}"
                checked += 1
    # Contract 1.1: 20 values before, plus analyse_realisee (3), origine (2), statut_msi (2) and effet (2).
    assert checked == 29


@pytest.mark.parametrize("document", ["connectors-spice-hygen.md", "connectors-spice-hygen.fr.md"])
@pytest.mark.parametrize("kind", ["spice", "hygen"])
def test_docs_list_every_field(kind, document):
    contract = yaml.safe_load((REPOSITORY / "connectors" / f"{kind}.yaml").read_text(encoding="utf-8"))
    text = (REPOSITORY / "docs" / document).read_text(encoding="utf-8")
    for file_spec in contract["files"]:
        assert f"`{file_spec['pattern']}`" in text
        for path, _ in contract_fields(file_spec["fields"]):
            assert f"`{path}`" in text, f"{document} does not list {kind} field {path}"
