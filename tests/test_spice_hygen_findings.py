"""SPICE and HYGEN contract 1.1: diagnosis, consents, sequencing, findings and their links, XLSX exports.

Expected values are read by hand from examples/spice/*.csv and
examples/hygen/*.json; a change to those files must change these tests.
"""

import csv
import json
from pathlib import Path

import openpyxl
import pytest

from sonco_fhir import i18n
from sonco_fhir.config import REPOSITORY, load_settings
from sonco_fhir.pipeline import build_engine, map_source, merged_bundle

SPICE_DIR = REPOSITORY / "examples" / "spice"
HYGEN_DIR = REPOSITORY / "examples" / "hygen"
SPICE_RESULTATS = SPICE_DIR / "spice_resultats_20240702.csv"
HYGEN_EXPORT = HYGEN_DIR / "hygen_export_20240624.json"
LOINC = "http://loinc.org"
SONCO_CS = "https://sonco.example/fhir/CodeSystem/"


@pytest.fixture
def engine(monkeypatch):
    monkeypatch.setattr(i18n, "_current", "en")
    return build_engine(load_settings(), read_only=True)


def run(kind, paths, engine):
    mapped, summary = map_source(kind, [Path(path) for path in paths], load_settings(), engine)
    return [entry["resource"] for entry in merged_bundle(mapped)["entry"]], summary


@pytest.fixture
def spice(engine):
    resources, summary = run("spice", [SPICE_DIR], engine)
    assert summary.problems == []
    return resources


@pytest.fixture
def hygen(engine):
    resources, summary = run("hygen", [HYGEN_DIR], engine)
    assert summary.problems == []
    return resources


def of_type(resources, resource_type):
    return [resource for resource in resources if resource["resourceType"] == resource_type]


def by_id(resources, reference):
    resource_type, resource_id = reference.split("/")
    found = [r for r in resources if r["resourceType"] == resource_type and r["id"] == resource_id]
    assert len(found) == 1, reference
    return found[0]


def request_of(resources, number):
    found = [r for r in of_type(resources, "ServiceRequest") if r["identifier"][0]["value"] == number]
    assert len(found) == 1, number
    return found[0]


def based_on(resources, resource_type, request):
    wanted = f"ServiceRequest/{request['id']}"
    return [r for r in of_type(resources, resource_type) if any(ref["reference"] == wanted for ref in r.get("basedOn", []))]


def component(observation, code):
    found = [c for c in observation.get("component", []) if c["code"]["coding"][0]["code"] == code]
    assert len(found) == 1, f"{code} in {observation['id']}"
    return found[0]


def codes(codeable):
    return {(coding["system"], coding["code"]) for coding in codeable["coding"]}


def observation_with(observations, code, value):
    """The one finding whose component `code` (or whose code) has `value` as text or code."""
    found = []
    for observation in observations:
        for item in observation.get("component", []):
            if item["code"]["coding"][0]["code"] == code:
                concept = item.get("valueCodeableConcept", {})
                if concept.get("text") == value or any(c.get("code") == value for c in concept.get("coding", [])):
                    found.append(observation)
    assert len(found) == 1, f"{code}={value}: {len(found)} found"
    return found[0]


# --- SPICE findings ---


def test_spice_kras_variant(spice):
    request = request_of(spice, "DEM-2024-00871")
    variant = observation_with(based_on(spice, "Observation", request), "48018-6", "KRAS")
    assert variant["meta"]["profile"] == ["https://sonco.example/fhir/StructureDefinition/sonco-observation-variant"]
    assert codes(variant["code"]) == {(LOINC, "69548-6")}
    assert codes(variant["valueCodeableConcept"]) == {(LOINC, "LA9633-4")}
    assert codes(component(variant, "48018-6")["valueCodeableConcept"]) == {("http://www.genenames.org", "HGNC:6407")}
    assert codes(component(variant, "48004-6")["valueCodeableConcept"]) == {("http://varnomen.hgvs.org", "NM_004985.5:c.34G>T")}
    assert codes(component(variant, "48005-3")["valueCodeableConcept"]) == {("http://varnomen.hgvs.org", "NP_004976.2:p.(Gly12Cys)")}
    assert codes(component(variant, "48002-0")["valueCodeableConcept"]) == {(LOINC, "LA6684-0")}
    assert component(variant, "81258-6")["valueQuantity"] == {"value": 0.28, "system": "http://unitsofmeasure.org", "code": "1"}
    specimen = by_id(spice, variant["specimen"]["reference"])
    assert specimen["identifier"][0]["value"] == "PRL-24-01533"


def test_spice_tmb_and_msi(spice):
    request = request_of(spice, "DEM-2024-00871")
    findings = based_on(spice, "Observation", request)
    tmb = [o for o in findings if codes(o["code"]) == {(LOINC, "94076-7")}]
    msi = [o for o in findings if codes(o["code"]) == {(LOINC, "81695-9")}]
    assert len(tmb) == 1
    assert len(msi) == 1
    assert tmb[0]["valueQuantity"] == {"value": 3.1, "unit": "Mutations/Megabase",
                                       "system": "http://unitsofmeasure.org", "code": "1/1000000{Base}"}
    assert codes(msi[0]["valueCodeableConcept"]) == {(LOINC, "LA14122-8")}


def test_spice_fusion(spice):
    findings = based_on(spice, "Observation", request_of(spice, "DEM-2024-00905"))
    fusion = [o for o in findings if o["meta"]["profile"][0].endswith("sonco-observation-fusion")]
    assert len(fusion) == 1
    genes = [c["valueCodeableConcept"]["text"] for c in fusion[0]["component"] if c["code"]["coding"][0]["code"] == "48018-6"]
    assert genes == ["CD74", "NRG1"]
    assert codes(component(fusion[0], "48019-4")["valueCodeableConcept"]) == {("http://www.sequenceontology.org", "SO:0001565")}


def test_spice_therapeutic_implication(spice):
    findings = based_on(spice, "Observation", request_of(spice, "DEM-2024-00871"))
    implication = [o for o in findings if codes(o["code"]) == {(
        "http://hl7.org/fhir/uv/genomics-reporting/CodeSystem/tbd-codes-cs", "therapeutic-implication")}]
    assert len(implication) == 1
    implication = implication[0]
    assert "value" not in json.dumps(list(implication.keys()))
    variant = by_id(spice, implication["derivedFrom"][0]["reference"])
    assert component(variant, "48018-6")["valueCodeableConcept"]["text"] == "KRAS"
    assert component(implication, "51963-7")["valueCodeableConcept"] == {"text": "sotorasib"}
    assert component(implication, "93044-6")["valueCodeableConcept"] == {"text": "ESCAT IIB"}
    effect = [c for c in implication["component"] if c["code"]["coding"][0]["code"] == "therapeutic-implication"]
    assert codes(effect[0]["valueCodeableConcept"]) == {(LOINC, "LA6677-4")}


def test_spice_trial_implication(spice):
    findings = based_on(spice, "Observation", request_of(spice, "DEM-2024-00905"))
    implication = [o for o in findings if o["meta"]["profile"][0].endswith("therapeutic-implication")][0]
    trial = [c for c in implication["component"] if c["code"]["coding"][0]["code"] == "associated-therapy"]
    assert codes(trial[0]["valueCodeableConcept"]) == {("http://clinicaltrials.gov", "NCT09990001")}


def test_spice_report_lists_findings(spice):
    request = request_of(spice, "DEM-2024-00871")
    report = based_on(spice, "DiagnosticReport", request)[0]
    findings = {f"Observation/{o['id']}" for o in based_on(spice, "Observation", request)}
    assert {ref["reference"] for ref in report["result"]} == findings
    assert len(findings) == 4


def test_spice_recommendation_links_findings(spice):
    request = request_of(spice, "DEM-2024-00871")
    findings = based_on(spice, "Observation", request)
    plan = [p for p in of_type(spice, "CarePlan") if p["created"] == "2024-04-09"][0]
    linked = [by_id(spice, ref["reference"]) for ref in plan["activity"][0]["detail"]["reasonReference"]]
    assert [o["meta"]["profile"][0].rsplit("-", 1)[-1] for o in linked] == ["variant", "implication"]
    assert all(o in findings for o in linked)


# --- SPICE diagnosis, consents, samples and sequencing ---


def test_spice_condition(spice):
    request = request_of(spice, "DEM-2024-00871")
    condition = by_id(spice, request["reasonReference"][0]["reference"])
    assert codes(condition["code"]) == {("https://smt.esante.gouv.fr/terminologie-cim-10", "C25.9")}
    assert condition["code"]["text"] == "Tumeur maligne du pancréas, sans précision"
    assert condition["extension"][0]["valueCodeableConcept"] == {"text": "Adénocarcinome canalaire"}
    assert condition["onsetDateTime"] == "2023-12-12"
    assert condition["subject"] == request["subject"]


def test_spice_no_condition_without_code(spice):
    request = request_of(spice, "DEM-2024-01012")
    assert "reasonReference" not in request
    assert len(of_type(spice, "Condition")) == 6


def test_spice_consents(spice):
    subject = request_of(spice, "DEM-2024-00905")["subject"]["reference"]
    consents = {c["scope"]["coding"][0]["code"]: c for c in of_type(spice, "Consent") if c["patient"]["reference"] == subject}
    assert consents["research"]["provision"] == {"type": "permit"}
    assert consents["treatment"]["provision"] == {"type": "deny"}
    assert consents["research"]["dateTime"] == "2024-01-19"
    # DEM-2024-01342 has no consent date yet: 6 requests with consents, two choices each.
    assert len(of_type(spice, "Consent")) == 12


CELLULARITY = "https://sonco.example/fhir/StructureDefinition/sonco-tumour-cellularity"


def test_spice_tumour_cellularity(spice):
    # PRL-24-01620: cellularite_tumorale 40 in spice_prelevements_20240702.csv.
    specimens = [s for s in of_type(spice, "Specimen") if s["identifier"][0]["value"] == "PRL-24-01620"]
    assert specimens[0]["extension"] == [{"url": CELLULARITY, "valueQuantity": {
        "value": 40, "unit": "%", "system": "http://unitsofmeasure.org", "code": "%"}}]
    assert "note" not in specimens[0]
    blood = [s for s in of_type(spice, "Specimen") if s["identifier"][0]["value"] == "PRL-24-01621"]
    assert "extension" not in blood[0]


def test_hygen_tumour_cellularity(hygen):
    # ECH-AU-24-2702: cellularite_tumorale 35 in hygen_export_20240624.json; ECH-AU-24-2703 is the blood sample.
    specimens = {s["identifier"][0]["value"]: s for s in of_type(hygen, "Specimen")}
    assert specimens["ECH-AU-24-2702"]["extension"] == [{"url": CELLULARITY, "valueQuantity": {
        "value": 35, "unit": "%", "system": "http://unitsofmeasure.org", "code": "%"}}]
    assert "extension" not in specimens["ECH-AU-24-2703"]


def test_spice_sequencing_procedure(spice):
    procedure = based_on(spice, "Procedure", request_of(spice, "DEM-2024-01012"))[0]
    assert procedure["status"] == "completed"
    assert procedure["performedPeriod"] == {"start": "2024-02-26", "end": "2024-06-12"}
    assert codes(procedure["code"]) == {(LOINC, "86205-2")}
    assert procedure["report"][0]["reference"].startswith("DiagnosticReport/")


def test_spice_failed_sequencing_with_resampling(spice):
    request = request_of(spice, "DEM-2024-01455")
    procedure = based_on(spice, "Procedure", request)[0]
    assert procedure["status"] == "stopped"
    assert codes(procedure["statusReason"]) == {(SONCO_CS + "sonco-sequencing-failure-reason", "low-tumour-cellularity")}
    assert procedure["followUp"] == [{"coding": [{"system": SONCO_CS + "sonco-sequencing-follow-up", "code": "new-sample",
                                                  "display": "Nouveau prélèvement demandé"}],
                                      "text": "Nouveau prélèvement demandé"}]
    assert "report" not in procedure
    assert based_on(spice, "DiagnosticReport", request) == []
    samples = [s for s in of_type(spice, "Specimen") if s["request"][0]["reference"] == f"ServiceRequest/{request['id']}"]
    assert sorted(s["identifier"][0]["value"] for s in samples) == ["PRL-24-02210", "PRL-24-02211", "PRL-24-02508"]


# --- HYGEN ---


def test_hygen_germline_variant_and_referral(hygen):
    request = request_of(hygen, "HYG-24-0312")
    variant = observation_with(based_on(hygen, "Observation", request), "48018-6", "BRCA2")
    assert codes(component(variant, "48002-0")["valueCodeableConcept"]) == {(LOINC, "LA6683-2")}
    assert component(variant, "81258-6")["valueQuantity"]["value"] == 0.49
    plan = [p for p in of_type(hygen, "CarePlan") if p["created"] == "2024-04-02"][0]
    referral = [a for a in plan["activity"] if codes(a["detail"]["code"]) == {(SONCO_CS + "sonco-rcp-recommendation", "oncogenetics-referral")}]
    assert referral[0]["detail"]["reasonReference"] == [{"reference": f"Observation/{variant['id']}"}]


def test_hygen_copy_number(hygen):
    findings = based_on(hygen, "Observation", request_of(hygen, "HYG-24-0450"))
    gain = observation_with(findings, "48018-6", "ERBB2")
    assert gain["meta"]["profile"][0].endswith("sonco-observation-copy-number")
    assert component(gain, "82155-3")["valueQuantity"] == {"value": 18}


def test_hygen_report_lists_findings(hygen):
    request = request_of(hygen, "HYG-24-0590")
    report = based_on(hygen, "DiagnosticReport", request)[0]
    assert len(report["result"]) == 3
    # Reported but not yet discussed at the RCP d'aval: no CarePlan for this patient.
    assert [p for p in of_type(hygen, "CarePlan") if p["subject"] == request["subject"]] == []


def test_hygen_failed_sequencing_with_resampling(hygen):
    procedure = based_on(hygen, "Procedure", request_of(hygen, "HYG-24-0488"))[0]
    assert procedure["status"] == "stopped"
    assert procedure["followUp"] == [{"coding": [{"system": SONCO_CS + "sonco-sequencing-follow-up", "code": "new-sample",
                                                  "display": "Nouveau prélèvement demandé"}],
                                      "text": "Nouveau prélèvement demandé"}]
    assert procedure["performedPeriod"] == {"start": "2024-03-06", "end": "2024-04-08"}


def test_hygen_two_dossiers_share_condition(hygen):
    first = request_of(hygen, "HYG-24-0450")["reasonReference"]
    second = request_of(hygen, "HYG-24-0451")["reasonReference"]
    assert first == second


def test_hygen_allele_frequency_digits_kept(engine, tmp_path):
    text = HYGEN_EXPORT.read_text(encoding="utf-8").replace('"frequence_allelique": 0.350', '"frequence_allelique": 0.3512')
    path = tmp_path / "hygen_export_20240625.json"
    path.write_text(text, encoding="utf-8")
    resources, _ = run("hygen", [path], engine)
    variant = observation_with(resources, "48018-6", "PIK3CA")
    assert component(variant, "81258-6")["valueQuantity"]["value"] == 0.3512


# --- contract checks on findings ---


def read_rows(path: Path):
    with open(path, encoding="utf-8-sig", newline="") as handle:
        rows = list(csv.reader(handle, delimiter=";"))
    return rows[0], rows[1:]


def write_rows(path: Path, header, rows):
    with open(path, "w", encoding="utf-8", newline="") as handle:
        csv.writer(handle, delimiter=";").writerows([header, *rows])
    return path


def test_variant_without_gene_set_aside(engine, tmp_path):
    header, rows = read_rows(SPICE_RESULTATS)
    rows[0][header.index("gene")] = ""
    path = write_rows(tmp_path / "spice_resultats_20240703.csv", header, rows)
    _, summary = run("spice", [SPICE_DIR / "spice_demandes_20240702.csv", SPICE_DIR / "spice_prelevements_20240702.csv", path], engine)
    assert len(summary.problems) == 1
    assert summary.problems[0].location == "line 2, column gene"
    assert summary.problems[0].message == "required value missing when type_resultat = variant"


def test_allele_frequency_not_a_number(engine, tmp_path):
    header, rows = read_rows(SPICE_RESULTATS)
    rows[0][header.index("frequence_allelique")] = "28 %"
    path = write_rows(tmp_path / "spice_resultats_20240703.csv", header, rows)
    _, summary = run("spice", [path], engine)
    assert summary.problems[0].location == "line 2, column frequence_allelique"
    assert summary.problems[0].message == "not a number"
    assert "0,28" in summary.problems[0].fix


def test_findings_of_request_are_one_record(engine):
    _, summary = run("spice", [SPICE_DIR / "spice_demandes_20240702.csv", SPICE_DIR / "spice_prelevements_20240702.csv", SPICE_RESULTATS], engine)
    assert summary.problems == []
    assert summary.records_read == 7 + 11 + 3  # 8 finding rows of 3 requests


# --- XLSX ---


def csv_to_xlsx(source: Path, target: Path, sheet: str) -> Path:
    """Write the rows of a CSV example into a workbook, with dates as date cells like a spreadsheet would."""
    header, rows = read_rows(source)
    workbook = openpyxl.Workbook()
    worksheet = workbook.active
    worksheet.title = sheet
    worksheet.append(header)
    for row in rows:
        worksheet.append(row)
    workbook.save(target)
    return target


def test_xlsx_gives_same_resources_as_csv(engine, tmp_path):
    for source in SPICE_DIR.glob("*.csv"):
        kind = source.stem.removeprefix("spice_").rsplit("_", 1)[0]
        csv_to_xlsx(source, tmp_path / source.with_suffix(".xlsx").name, kind)
    from_csv, _ = run("spice", [SPICE_DIR], engine)
    from_xlsx, summary = run("spice", [tmp_path], engine)
    assert summary.problems == []
    assert summary.records_read == 28

    def without_provenance(resources):
        return sorted((json.dumps(r, sort_keys=True) for r in resources if r["resourceType"] != "Provenance"))

    assert without_provenance(from_xlsx) == without_provenance(from_csv)


def test_xlsx_date_cells(engine, tmp_path):
    from datetime import datetime

    header, rows = read_rows(SPICE_DIR / "spice_demandes_20240702.csv")
    workbook = openpyxl.Workbook()
    worksheet = workbook.active
    worksheet.title = "demandes"
    worksheet.append(header)
    row = list(rows[0])
    row[header.index("date_prescription")] = datetime(2024, 1, 8)
    row[header.index("date_modification")] = datetime(2024, 3, 26, 14, 12)
    worksheet.append(row)
    workbook.save(tmp_path / "spice_demandes_20240703.xlsx")
    resources, summary = run("spice", [tmp_path / "spice_demandes_20240703.xlsx"], engine)
    assert summary.problems == []
    assert request_of(resources, "DEM-2024-00871")["authoredOn"] == "2024-01-08"


def test_xlsx_problem_names_sheet_row_column(engine, tmp_path):
    path = csv_to_xlsx(SPICE_DIR / "spice_demandes_20240702.csv", tmp_path / "spice_demandes_20240703.xlsx", "demandes")
    workbook = openpyxl.load_workbook(path)
    header = [cell.value for cell in workbook["demandes"][1]]
    workbook["demandes"].cell(row=3, column=header.index("date_prescription") + 1, value="")
    workbook.save(path)
    _, summary = run("spice", [path], engine)
    assert len(summary.problems) == 1
    assert summary.problems[0].location == "sheet demandes, row 3, column date_prescription"
    assert summary.problems[0].message == "required value missing"


def test_xlsx_without_matching_sheet(engine, tmp_path):
    workbook = openpyxl.Workbook()
    workbook.active.title = "feuille1"
    workbook.create_sheet("feuille2")
    path = tmp_path / "spice_demandes_20240703.xlsx"
    workbook.save(path)
    _, summary = run("spice", [path], engine)
    assert summary.problems[0].location == "file"
    assert summary.problems[0].message == "no sheet named 'demandes' in the workbook"


def test_xlsx_not_a_workbook(engine, tmp_path):
    path = tmp_path / "spice_demandes_20240703.xlsx"
    path.write_text("not a workbook", encoding="utf-8")
    _, summary = run("spice", [path], engine)
    assert summary.problems[0].location == "file"
    assert summary.problems[0].message.startswith("cannot be read")
