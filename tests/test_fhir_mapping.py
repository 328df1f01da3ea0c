"""FHIR R4 exports to SONCO resources, without a server: values asserted against the input files."""

import json
import logging
import shutil
from pathlib import Path

import pytest

from sonco_fhir import i18n
from sonco_fhir.canonical import PSEUDONYM_SYSTEM, profile_url
from sonco_fhir.config import load_settings
from sonco_fhir.connectors import fhir as fhir_connector
from sonco_fhir.pipeline import build_engine, map_source, merged_bundle
from sonco_fhir.privacy.pseudonym import classify_identifier
from conftest import CASES, REPOSITORY
from helpers import as_text, component, of_type

FR_CORE = CASES / "fhir-fr-core"
MCODE = CASES / "fhir-mcode-stu1"
GENOMICS = CASES / "fhir-genomics-reporting"
ONCOLOGY_BUNDLE = GENOMICS / "Bundle-oncologyexamples-r4.json"
CG_EXAMPLE = GENOMICS / "Bundle-diagnosticreport-cgexample.json"
DSTU2_BUNDLE = CASES / "fhir-bundles-misc" / "bundle-transaction.DSTU2-era.json"

PROFILES_BY_TYPE = {
    "Patient": {"sonco-patient"},
    "Condition": {"sonco-condition"},
    "MedicationStatement": {"sonco-medicationstatement"},
    "Observation": {"sonco-observation-variant", "sonco-observation-biomarker", "sonco-observation-genomic", "sonco-observation"},
    "DiagnosticReport": {"sonco-diagnosticreport"},
    "Specimen": {"sonco-specimen"},
    "Procedure": {"sonco-procedure"},
    "ResearchSubject": {"sonco-researchsubject"},
    "Provenance": {"sonco-provenance"},
}


# --- helpers ---


def run(*paths: Path, engine=None):
    """Map FHIR files as `sonco-fhir map fhir` does; return (resources, summary, engine)."""
    settings = load_settings()
    engine = engine or build_engine(settings, read_only=True)
    mapped, summary = map_source("fhir", list(paths), settings, engine)
    resources = [entry["resource"] for entry in merged_bundle(mapped)["entry"]]
    return resources, summary, engine


def load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def bundle_resources(path: Path) -> list[dict]:
    return [entry["resource"] for entry in load(path)["entry"] if "resource" in entry]


def by_id(resources: list[dict], resource_type: str, resource_id: str) -> dict:
    for resource in resources:
        if resource["resourceType"] == resource_type and resource["id"] == resource_id:
            return resource
    raise AssertionError(f"no {resource_type}/{resource_id} in the output")


def sonco_id(engine, resource_type: str, source_key: str) -> str:
    """The SONCO id that the FHIR mappings give the source resource `source_key`."""
    return engine.pseudonymiser.resource_id(resource_type, "fhir", source_key)


def references_in(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "reference":
                yield value
            else:
                yield from references_in(value)
    elif isinstance(node, list):
        for value in node:
            yield from references_in(value)


def texts_outside_ids(node, key: str = ""):
    """Every text of the output except resource ids, references and pseudonyms, which are HMAC values."""
    if isinstance(node, dict):
        is_pseudonym = node.get("system") == PSEUDONYM_SYSTEM
        for child_key, value in node.items():
            if child_key in ("id", "reference") or (is_pseudonym and child_key == "value"):
                continue
            yield from texts_outside_ids(value, child_key)
    elif isinstance(node, list):
        for value in node:
            yield from texts_outside_ids(value, key)
    elif isinstance(node, str):
        yield node


def identifying_values(patient: dict) -> list[str]:
    """The identifiers, names, address, telecom, birth date and birth place of a source Patient."""
    values = [identifier["value"] for identifier in patient.get("identifier", [])]
    for name in patient.get("name", []):
        values += [name.get("family", ""), name.get("text", "")] + name.get("given", [])
    for address in patient.get("address", []):
        values += address.get("line", []) + [address.get("city", ""), address.get("postalCode", "")]
    values += [telecom["value"] for telecom in patient.get("telecom", [])]
    for extension in patient.get("extension", []):
        place = extension.get("valueAddress", {})
        values += [place.get("city", ""), place.get("district", ""), place.get("postalCode", "")]
    values.append(patient["birthDate"])
    return [value for value in values if value]


@pytest.fixture
def fr_core(tmp_path) -> dict[str, Path]:
    """The FR Core Patients under neutral file names, by original file name.

    Two of the original file names contain the patient's name, and the engine's
    Provenance copies the file path, so the privacy guard would set them aside.
    """
    folder = tmp_path / "fr-core"
    folder.mkdir()
    copies = {}
    for number, source in enumerate(sorted(FR_CORE.glob("*.json")), start=1):
        copies[source.name] = folder / f"patient-{number}.json"
        shutil.copyfile(source, copies[source.name])
    return copies


# --- Patient ---


def test_fr_core_patients_map(fr_core):
    resources, summary, _ = run(*fr_core.values())

    assert summary.problems == []
    assert summary.records_mapped == 3
    sources = [load(path) for path in fr_core.values()]
    patients = of_type(resources, "Patient")
    assert sorted(p["gender"] for p in patients) == sorted(s["gender"] for s in sources)
    assert sorted(p["birthDate"] for p in patients) == sorted(s["birthDate"][:4] for s in sources)


def test_fr_core_patients_keep_only_pseudonym(fr_core):
    resources, _, _ = run(*fr_core.values())

    for patient in of_type(resources, "Patient"):
        assert patient["identifier"] == [
            {
                "use": "secondary",
                "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "PSEUDED"}]},
                "system": PSEUDONYM_SYSTEM,
                "value": patient["id"],
            }
        ]
        assert set(patient) <= {"resourceType", "id", "meta", "identifier", "gender", "birthDate", "deceasedBoolean", "deceasedDateTime"}


def test_fr_core_identity_absent_from_output(fr_core):
    resources, _, _ = run(*fr_core.values())
    output_texts = [text.lower() for text in texts_outside_ids(resources)]

    values = [value for path in fr_core.values() for value in identifying_values(load(path))]
    assert "179125612113516" in values  # the production-OID INS-NIR is among the checked values
    for value in values:
        assert not any(value.lower() in text for text in output_texts), value


def test_fr_core_ins_classify_as_ins_nir():
    ins_found = 0
    for path in FR_CORE.glob("*.json"):
        for identifier in load(path).get("identifier", []):
            type_codes = [coding["code"] for coding in identifier["type"]["coding"]]
            if "INS-NIR" in type_codes:
                ins_found += 1
                assert classify_identifier(identifier["system"], "INS-NIR") == "INS-NIR"
                assert classify_identifier(identifier["system"]) == "INS-NIR"  # by OID alone
            if "PI" in type_codes:
                assert classify_identifier(identifier["system"], "PI") == "IPP"
    assert ins_found == 2


def test_fhir_and_hl7v2_same_patient(tmp_path, fr_core):
    # The INS of the FR Core Patient with the test OID, sent by HL7 v2 under the production OID.
    source = load(FR_CORE / "Patient-avec-INSNIR-logique.json")
    ins = next(i["value"] for i in source["identifier"] if i["type"]["coding"][0]["code"] == "INS-NIR")
    message = tmp_path / "a28.hl7"
    message.write_text(
        "MSH|^~\\&|DPI|HOSP|SONCO|SONCO|20240101120000||ADT^A28^ADT_A05|MSG1|P|2.5\r"
        f"PID|||{ins}^^^ASIP-SANTE-INS-NIR&1.2.250.1.213.1.4.8&ISO^INS||X^Y||19621227|M\r",
        encoding="utf-8",
    )
    settings = load_settings()
    engine = build_engine(settings, read_only=True)
    v2_mapped, _ = map_source("hl7v2", [message], settings, engine)
    fhir_resources, _, _ = run(fr_core["Patient-avec-INSNIR-logique.json"], engine=engine)

    assert of_type(fhir_resources, "Patient")[0]["id"] == v2_mapped[0].patient_id


def test_fhir_and_hl7v2_same_ipp(tmp_path, fr_core):
    # The IPP alone: FHIR writes its system urn:oid:<oid>, HL7 v2 the bare OID in CX-4.2.
    source = load(FR_CORE / "Patient-avec-INSNIR-logique.json")
    ipp = next(i for i in source["identifier"] if i["type"]["coding"][0]["code"] == "PI")
    oid = ipp["system"].removeprefix("urn:oid:")
    message = tmp_path / "a28.hl7"
    message.write_text(
        "MSH|^~\\&|DPI|HOSP|SONCO|SONCO|20240101120000||ADT^A28^ADT_A05|MSG1|P|2.5\r"
        f"PID|||{ipp['value']}^^^HOSP&{oid}&ISO^PI||X^Y||19621227|M\r",
        encoding="utf-8",
    )
    settings = load_settings()
    engine = build_engine(settings, read_only=True)
    v2_mapped, _ = map_source("hl7v2", [message], settings, engine)
    fhir_resources, _, _ = run(fr_core["Patient-avec-INSNIR-logique.json"], engine=engine)

    assert of_type(fhir_resources, "Patient")[0]["id"] == v2_mapped[0].patient_id


def test_patient_without_identifier_maps(fr_core):
    # The FR Core Patient without INS or IPP is known by its source reference only.
    resources, summary, _ = run(fr_core["Patient-MichelAngelo-Nessi.json"])

    assert summary.problems == []
    assert of_type(resources, "Patient")[0]["birthDate"] == load(FR_CORE / "Patient-MichelAngelo-Nessi.json")["birthDate"][:4]


# --- Condition ---


def test_mcode_primary_condition():
    source = load(MCODE / "Condition-mCODEPrimaryCancerConditionExample01.json")
    resources, summary, engine = run(MCODE)

    assert summary.problems == []
    condition = by_id(resources, "Condition", sonco_id(engine, "Condition", "Condition/mCODEPrimaryCancerConditionExample01"))
    assert condition["code"] == source["code"]  # SNOMED CT 254637007
    assert condition["code"]["coding"][0]["code"] == "254637007"
    for element in ("category", "clinicalStatus", "verificationStatus", "onsetDateTime", "bodySite"):
        assert condition[element] == source[element], element
    assert condition["stage"][0]["summary"] == source["stage"][0]["summary"]
    assert condition["extension"] == source["extension"]  # histology morphology, a code only
    assert "asserter" not in condition


def test_mcode_condition_subject_and_references():
    resources, _, engine = run(MCODE)
    primary = by_id(resources, "Condition", sonco_id(engine, "Condition", "Condition/mCODEPrimaryCancerConditionExample01"))
    secondary = by_id(resources, "Condition", sonco_id(engine, "Condition", "Condition/mCODESecondaryCancerConditionExample01"))
    patient = by_id(resources, "Patient", primary["subject"]["reference"].split("/")[1])

    assert patient["birthDate"] == "1951"  # mCODEPatientExample01, born 1951-01-20
    assert secondary["subject"] == primary["subject"]
    stage_group = sonco_id(engine, "Observation", "Observation/mCODETNMClinicalStageGroupExample01")
    assert primary["stage"][0]["assessment"] == [{"reference": f"Observation/{stage_group}"}]
    assert secondary["extension"][0]["valueReference"] == {"reference": f"Condition/{primary['id']}"}


def test_condition_alone_gets_source_ref_patient():
    resources, summary, _ = run(MCODE / "Condition-mCODEPrimaryCancerConditionExample01.json")

    assert summary.problems == []
    condition = of_type(resources, "Condition")[0]
    assert condition["subject"]["reference"] == f"Patient/{of_type(resources, 'Patient')[0]['id']}"
    # The stage Observation is not in this run, so the assessment is dropped rather than dangling.
    assert "assessment" not in condition["stage"][0]


# --- MedicationStatement ---


@pytest.mark.parametrize("name", ["Example01", "Example02"])
def test_mcode_medication_statement(name):
    path = MCODE / f"MedicationStatement-mCODECancerRelatedMedicationStatement{name}.json"
    source = load(path)
    resources, summary, _ = run(path, MCODE / "Patient-mCODEPatientExample01.json")

    assert summary.problems == []
    statement = of_type(resources, "MedicationStatement")[0]
    assert statement["medicationCodeableConcept"] == source["medicationCodeableConcept"]  # RxNorm 349472
    assert statement["effectiveDateTime"] == source["effectiveDateTime"]
    assert statement["status"] == source["status"]
    assert statement["category"] == source["category"]
    assert "dosage" not in statement
    assert statement["subject"]["reference"] == f"Patient/{of_type(resources, 'Patient')[0]['id']}"


def test_medication_reference_becomes_code(tmp_path):
    # A MedicationStatement that names its drug through a contained Medication.
    source = load(MCODE / "MedicationStatement-mCODECancerRelatedMedicationStatementExample01.json")
    medication_code = source.pop("medicationCodeableConcept")
    source["contained"] = [{"resourceType": "Medication", "id": "drug", "code": medication_code}]
    source["medicationReference"] = {"reference": "#drug"}
    path = tmp_path / "statement.json"
    path.write_text(json.dumps(source), encoding="utf-8")

    resources, summary, _ = run(path)

    assert summary.problems == []
    statement = of_type(resources, "MedicationStatement")[0]
    assert statement["medicationCodeableConcept"] == medication_code
    assert "medicationReference" not in statement
    assert "contained" not in statement


# --- Observations ---


def test_mcode_variant_components():
    source = load(MCODE / "Observation-mCODECancerGeneticVariantExample01.json")
    resources, _, engine = run(MCODE)

    variant = by_id(resources, "Observation", sonco_id(engine, "Observation", "Observation/mCODECancerGeneticVariantExample01"))
    assert variant["meta"]["profile"] == [profile_url("sonco-observation-variant")]
    assert variant["component"] == source["component"]
    assert component(variant, "48018-6")["valueCodeableConcept"]["coding"][0]["code"] == "HGNC:11389"
    assert component(variant, "81290-9")["valueCodeableConcept"]["coding"][0]["code"] == "NC_000019.8:g.1171707G>A"
    assert variant["valueCodeableConcept"] == source["valueCodeableConcept"]  # LA9633-4 Present
    assert variant["method"] == source["method"]


def test_genomics_variant_gene_and_hgvs():
    resources, summary, engine = run(ONCOLOGY_BUNDLE)
    entries = {entry["fullUrl"]: entry["resource"] for entry in load(ONCOLOGY_BUNDLE)["entry"]}

    assert summary.problems == []
    variants = {url: r for url, r in entries.items() if r["resourceType"] == "Observation" and r.get("code", {}).get("coding", [{}])[0].get("code") == "69548-6"}
    assert len(variants) == 3
    for url, source in variants.items():
        variant = by_id(resources, "Observation", sonco_id(engine, "Observation", url))
        assert variant["meta"]["profile"] == [profile_url("sonco-observation-variant")]
        assert variant["component"] == source["component"]
        assert variant["specimen"] == {"reference": f"Specimen/{sonco_id(engine, 'Specimen', source['specimen']['reference'])}"}
        assert "performer" not in variant
    jak2 = by_id(resources, "Observation", sonco_id(engine, "Observation", "urn:uuid:16fdd5fc-e665-48af-99e4-48d603f3e12d"))
    assert component(jak2, "48018-6")["valueCodeableConcept"]["coding"][0]["code"] == "JAK2"
    assert component(jak2, "48005-3")["valueCodeableConcept"]["coding"][0]["code"] == "p.Val617Phe"
    assert component(jak2, "81290-9")["valueCodeableConcept"]["coding"][0]["code"] == "9:g.5073770G>T"


def test_tmb_and_msi_biomarkers():
    resources, _, engine = run(ONCOLOGY_BUNDLE)
    tmb = by_id(resources, "Observation", sonco_id(engine, "Observation", "urn:uuid:40e85eda-4d31-4bd2-a5a0-c39d63f9824f"))
    msi = by_id(resources, "Observation", sonco_id(engine, "Observation", "urn:uuid:64b91716-6431-41bd-8fd4-7ac99bebdee9"))

    assert tmb["meta"]["profile"] == [profile_url("sonco-observation-biomarker")]
    assert tmb["valueQuantity"]["value"] == 25
    assert tmb["valueQuantity"]["code"] == "1/1000000{Base}"
    assert tmb["code"]["text"] == "Tumor Mutational Burden"
    assert {"system": "http://loinc.org", "code": "94076-7", "display": "Mutations/Megabase [# Ratio] in Tumor"} in tmb["code"]["coding"]
    assert msi["meta"]["profile"] == [profile_url("sonco-observation-biomarker")]
    assert msi["valueString"] == "High"
    assert [coding["code"] for coding in msi["code"]["coding"]] == ["81695-9"]


def test_implications_and_groupers_genomic():
    resources, _, engine = run(ONCOLOGY_BUNDLE)
    entries = {entry["fullUrl"]: entry["resource"] for entry in load(ONCOLOGY_BUNDLE)["entry"]}

    for url, source in entries.items():
        codes = [coding["code"] for coding in source.get("code", {}).get("coding", [])]
        if "therapeutic-implication" in codes or "grouper" in codes:
            observation = by_id(resources, "Observation", sonco_id(engine, "Observation", url))
            assert observation["meta"]["profile"] == [profile_url("sonco-observation-genomic")]
            assert observation.get("component") == source.get("component")
    implication = by_id(resources, "Observation", sonco_id(engine, "Observation", "urn:uuid:1bf9642d-fd1c-4819-8c5d-44fae4bad524"))
    jak2 = sonco_id(engine, "Observation", "urn:uuid:16fdd5fc-e665-48af-99e4-48d603f3e12d")
    assert implication["derivedFrom"] == [{"reference": f"Observation/{jak2}"}]


def test_grouper_without_subject_takes_bundle_patient():
    resources, _, engine = run(ONCOLOGY_BUNDLE)
    grouper = by_id(resources, "Observation", sonco_id(engine, "Observation", "urn:uuid:16fdd5fc-e665-48af-99e4-48d603f3e12f"))

    assert grouper["subject"]["reference"] == f"Patient/{of_type(resources, 'Patient')[0]['id']}"
    assert len(grouper["hasMember"]) == 5


def test_region_studied_and_stage_profiles():
    resources, _, engine = run(MCODE)

    region = by_id(resources, "Observation", sonco_id(engine, "Observation", "Observation/mCODEGenomicRegionStudiedExample01"))
    stage = by_id(resources, "Observation", sonco_id(engine, "Observation", "Observation/mCODETNMClinicalStageGroupExample01"))
    assert region["meta"]["profile"] == [profile_url("sonco-observation-genomic")]
    assert stage["meta"]["profile"] == [profile_url("sonco-observation")]
    # Its three member Observations are not in the input: dropped rather than dangling.
    assert "hasMember" not in stage


# --- DiagnosticReport and Specimen ---


def test_genomics_report_drops_presented_form():
    source = bundle_resources(CG_EXAMPLE)[0]
    resources, _, engine = run(CG_EXAMPLE)
    report = by_id(resources, "DiagnosticReport", sonco_id(engine, "DiagnosticReport", "DiagnosticReport/report"))

    assert "presentedForm" in source
    assert "presentedForm" not in report
    assert source["presentedForm"][0]["data"] not in as_text(resources)
    for element in ("performer", "basedOn", "text"):
        assert element not in report
    assert report["code"] == source["code"]  # LOINC 81247-9
    assert report["issued"] == source["issued"]
    expected = [f"Observation/{sonco_id(engine, 'Observation', r['reference'])}" for r in source["result"]]
    assert [r["reference"] for r in report["result"]] == expected


def test_mcode_report_and_specimen():
    report_source = load(MCODE / "DiagnosticReport-mCODECancerGenomicsReportExample01.json")
    specimen_source = load(MCODE / "Specimen-mCODEGeneticSpecimenExample01.json")
    resources, _, engine = run(MCODE)
    report = by_id(resources, "DiagnosticReport", sonco_id(engine, "DiagnosticReport", "DiagnosticReport/mCODECancerGenomicsReportExample01"))
    specimen = by_id(resources, "Specimen", sonco_id(engine, "Specimen", "Specimen/mCODEGeneticSpecimenExample01"))

    assert report["category"] == report_source["category"]  # LAB and GE
    assert report["effectiveDateTime"] == report_source["effectiveDateTime"]
    assert report["specimen"] == [{"reference": f"Specimen/{specimen['id']}"}]
    assert specimen["type"] == specimen_source["type"]  # v2-0487 TISS
    assert specimen["collection"] == {"bodySite": specimen_source["collection"]["bodySite"]}
    assert specimen["subject"] == report["subject"]


def test_specimen_by_identifier_reference():
    # The variants of this report name their specimen by identifier, with no literal reference.
    path = GENOMICS / "oncology-report-example.json"
    resources, summary, _ = run(path)

    assert summary.problems == []
    specimen = of_type(resources, "Specimen")[0]
    variants = [r for r in of_type(resources, "Observation") if r["meta"]["profile"] == [profile_url("sonco-observation-variant")]]
    assert len(variants) == 12
    assert all(variant["specimen"] == {"reference": f"Specimen/{specimen['id']}"} for variant in variants)
    assert "identifier" not in specimen


# --- Whole bundles ---


def test_transaction_bundle_references_resolve():
    resources, summary, _ = run(ONCOLOGY_BUNDLE)
    present = {f"{r['resourceType']}/{r['id']}" for r in resources}

    assert summary.problems == []
    assert summary.records_mapped == len(bundle_resources(ONCOLOGY_BUNDLE)) - 1  # all but the Practitioner
    references = [reference for resource in resources for reference in references_in(resource)]
    assert len(references) > 30
    for reference in references:
        assert reference in present, reference


@pytest.mark.parametrize("folder", [MCODE, GENOMICS])
def test_folder_references_resolve(folder):
    resources, _, _ = run(folder)
    present = {f"{r['resourceType']}/{r['id']}" for r in resources}

    for resource in resources:
        for reference in references_in(resource):
            assert reference in present, f"{resource['resourceType']} {reference}"


@pytest.mark.parametrize("folder", [MCODE, GENOMICS, FR_CORE])
def test_every_resource_has_sonco_profile(folder, fr_core):
    resources, _, _ = run(*(fr_core.values() if folder == FR_CORE else [folder]))

    assert resources
    for resource in resources:
        profiles = resource["meta"]["profile"]
        assert len(profiles) == 1
        assert profiles[0] in {profile_url(name) for name in PROFILES_BY_TYPE[resource["resourceType"]]}, resource["resourceType"]


def test_no_narrative_identifier_or_contained():
    resources, _, _ = run(MCODE, GENOMICS)

    for resource in resources:
        assert "text" not in resource
        assert "contained" not in resource
        if resource["resourceType"] != "Patient":
            assert "identifier" not in resource


def test_records_ordered_before_referrers():
    definition = fhir_connector.load_definition()
    records = fhir_connector.read_files([ONCOLOGY_BUNDLE], definition).records
    order = [record.data["source"]["key"] for record in records]
    report = next(r for r in records if r.selector["resource_type"] == "DiagnosticReport")

    assert order[0] == "urn:uuid:d0b4affa-91d6-46d1-af01-b30d9f16ef6d"  # the Patient
    assert order[-1] == report.data["source"]["key"]
    for result in report.data["resource"]["result"]:
        assert order.index(result["reference"]) < order.index(report.data["source"]["key"])


def test_types_not_read_are_counted(caplog):
    with caplog.at_level(logging.WARNING, logger="sonco_fhir.connectors.fhir"):
        _, summary, _ = run(CG_EXAMPLE)

    assert summary.problems == []
    assert "Organization 1" in caplog.text
    assert "ServiceRequest 1" in caplog.text
    assert "Task 1" in caplog.text


# --- Bad input ---


def test_invalid_json_line_and_column(tmp_path):
    text = (GENOMICS / "Observation-SNVexample.json").read_text(encoding="utf-8")
    broken = tmp_path / "broken.json"
    broken.write_text(text.replace('"status": "final",', '"status": "final"', 1), encoding="utf-8")
    with pytest.raises(json.JSONDecodeError) as expected:
        json.loads(broken.read_text(encoding="utf-8"))

    resources, summary, _ = run(broken, MCODE / "Condition-mCODEPrimaryCancerConditionExample01.json")

    assert len(summary.problems) == 1
    problem = summary.problems[0]
    assert problem.source == str(broken)
    assert problem.location == f"line {expected.value.lineno}, column {expected.value.colno}"
    assert problem.message.startswith("JSON invalide : ")
    assert problem.fix
    assert len(of_type(resources, "Condition")) == 1  # the other file still maps


def test_resource_without_resource_type(tmp_path):
    bundle = load(ONCOLOGY_BUNDLE)
    del bundle["entry"][4]["resource"]["resourceType"]  # the MSI Observation
    path = tmp_path / "bundle.json"
    path.write_text(json.dumps(bundle, indent=2), encoding="utf-8")

    resources, summary, engine = run(path)

    assert [(p.location, p.message) for p in summary.problems] == [("Bundle.entry[4].resource", "ressource sans resourceType")]
    assert summary.records_mapped == len(bundle["entry"]) - 2  # the Practitioner and the MSI
    grouper = by_id(resources, "Observation", sonco_id(engine, "Observation", "urn:uuid:16fdd5fc-e665-48af-99e4-48d603f3e12f"))
    msi = sonco_id(engine, "Observation", "urn:uuid:64b91716-6431-41bd-8fd4-7ac99bebdee9")
    assert {"reference": f"Observation/{msi}"} not in grouper["hasMember"]
    assert len(grouper["hasMember"]) == 4


def test_ndjson_bad_line(tmp_path):
    lines = [json.dumps(load(MCODE / name)) for name in ("Patient-mCODEPatientExample01.json", "Condition-mCODEPrimaryCancerConditionExample01.json")]
    lines.insert(1, '{"resourceType": "Observation", "status": }')
    path = tmp_path / "export.ndjson"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    resources, summary, _ = run(path)

    assert [p.location for p in summary.problems] == ["line 2, column 43"]
    assert summary.records_mapped == 2
    assert of_type(resources, "Condition")[0]["code"]["coding"][0]["code"] == "254637007"


def test_dstu2_bundle_set_aside():
    resources, summary, _ = run(DSTU2_BUNDLE)

    assert resources == []
    assert len(summary.problems) == 5
    for problem in summary.problems:
        assert problem.message == "Patient n'est pas du FHIR R4 valide : Patient.name[0].family (doit être une chaîne)"
        assert "Chalmers" not in problem.render()


def test_dstu2_problem_in_english():
    i18n.set_language("en")
    _, summary, _ = run(DSTU2_BUNDLE)

    assert summary.problems[0].message == "Patient is not valid FHIR R4: Patient.name[0].family (must be a string)"
    assert summary.problems[0].fix.startswith("correct these elements at the source")


def test_observation_without_patient_set_aside():
    resources, summary, _ = run(GENOMICS / "Observation-SNVexample.json")

    assert resources == []
    assert len(summary.problems) == 1
    assert summary.problems[0].message.startswith("Observation ne désigne aucun patient : aucun élément subject ou patient")


# --- treatment lines, encounters and death (resources of tests/data/fhir_ehr) ---

REPOSITORY_DATA = Path(__file__).resolve().parent / "data" / "fhir_ehr"
EHR_SEED = REPOSITORY_DATA / "seed"


@pytest.fixture
def ehr_folder(tmp_path) -> Path:
    """The EHR seed with its FR Core Patient, under the id the seed refers to."""
    folder = tmp_path / "ehr"
    shutil.copytree(EHR_SEED, folder)
    patient = load(FR_CORE / "Patient-avec-INSNIR-logique.json")
    patient["id"] = "frcore-6106172"
    (folder / "patient.json").write_text(json.dumps(patient), encoding="utf-8")
    return folder


def test_medication_request_becomes_statement(ehr_folder):
    resources, summary, engine = run(ehr_folder)

    assert summary.problems == []
    line = by_id(resources, "MedicationStatement", sonco_id(engine, "MedicationStatement", "MedicationRequest/frcore-line1"))
    assert line["status"] == "completed"
    # From the Medication that medicationReference names.
    assert line["medicationCodeableConcept"] == {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "349472"}]}
    assert line["effectivePeriod"] == {"start": "2024-03-11", "end": "2024-06-30"}
    assert "effectiveDateTime" not in line
    assert line["dateAsserted"] == "2024-03-10"
    assert line["reasonReference"] == [{"reference": f"Condition/{sonco_id(engine, 'Condition', 'Condition/frcore-lung-cancer')}"}]
    assert line["meta"]["profile"] == [profile_url("sonco-medicationstatement")]
    assert "dosage" not in line


def test_medication_request_without_bounds_uses_authored_on(tmp_path, ehr_folder):
    request = load(ehr_folder / "MedicationRequest-frcore-line1.json")
    del request["dosageInstruction"]
    request["status"] = "draft"
    (ehr_folder / "MedicationRequest-frcore-line1.json").write_text(json.dumps(request), encoding="utf-8")

    resources, summary, engine = run(ehr_folder)

    line = by_id(resources, "MedicationStatement", sonco_id(engine, "MedicationStatement", "MedicationRequest/frcore-line1"))
    assert line["effectiveDateTime"] == "2024-03-10"
    assert "effectivePeriod" not in line
    assert line["status"] == "intended"  # fhir-medicationrequest-status: draft -> intended


def test_medication_administration_period(ehr_folder):
    resources, summary, engine = run(ehr_folder)

    infusion = by_id(resources, "MedicationStatement",
                     sonco_id(engine, "MedicationStatement", "MedicationAdministration/frcore-infusion"))
    assert infusion["status"] == "active"  # fhir-medicationadministration-status: in-progress -> active
    assert infusion["effectivePeriod"] == {"start": "2024-07-02T09:00:00+02:00", "end": "2024-07-02T11:30:00+02:00"}
    assert infusion["medicationCodeableConcept"]["coding"][0]["code"] == "349472"


def test_encounter_drops_visit_number(ehr_folder):
    resources, summary, engine = run(ehr_folder)

    stay = by_id(resources, "Encounter", sonco_id(engine, "Encounter", "Encounter/frcore-stay"))
    assert stay["status"] == "finished"
    assert stay["class"] == {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP", "display": "inpatient encounter"}
    assert stay["period"] == {"start": "2024-02-12T10:00:00+01:00", "end": "2024-02-15T16:00:00+01:00"}
    assert "identifier" not in stay
    assert "NDA-0001" not in json.dumps(stay)
    assert stay["meta"]["profile"] == [profile_url("sonco-encounter")]


def test_patient_death_kept(ehr_folder):
    patient = load(ehr_folder / "patient.json")
    patient["deceasedDateTime"] = "2025-01-15T10:20:00+01:00"
    (ehr_folder / "patient.json").write_text(json.dumps(patient), encoding="utf-8")

    resources, summary, _ = run(ehr_folder)

    assert summary.problems == []
    (cohort_patient,) = of_type(resources, "Patient")
    assert cohort_patient["deceasedDateTime"] == "2025-01-15T10:20:00+01:00"
    assert cohort_patient["birthDate"] == patient["birthDate"][:4]


def test_declared_system_prefixes_keys():
    definition = fhir_connector.load_definition()
    condition = load(MCODE / "Condition-mCODEPrimaryCancerConditionExample01.json")
    condition["meta"]["source"] = "https://another-system.test/fhir"
    documents = [("chu-a", condition, {"kind": "fhir"})]

    first = fhir_connector.read_documents(documents, definition, "https://chu-a.test/fhir")
    second = fhir_connector.read_documents(documents, definition, "https://chu-b.test/fhir")

    assert first.records[0].data["source"]["key"] == "https://chu-a.test/fhir|Condition/mCODEPrimaryCancerConditionExample01"
    assert second.records[0].data["source"]["key"] == "https://chu-b.test/fhir|Condition/mCODEPrimaryCancerConditionExample01"
    assert first.records[0].data["source_system"] == "https://chu-a.test/fhir"
    assert first.records[0].data["patient_identifiers"] == [
        {"kind": "SOURCE-REF", "authority": "https://chu-a.test/fhir",
         "value": "https://chu-a.test/fhir|Patient/mCODEPatientExample01"}]


def test_loaded_key_reference_kept():
    definition = fhir_connector.load_definition()
    secondary = load(MCODE / "Condition-mCODESecondaryCancerConditionExample01.json")
    system = "https://chu-a.test/fhir"
    primary_key = f"{system}|Condition/mCODEPrimaryCancerConditionExample01"

    alone = fhir_connector.read_documents([("chu-a", secondary, {"kind": "fhir"})], definition, system)
    after_earlier_run = fhir_connector.read_documents([("chu-a", secondary, {"kind": "fhir"})], definition, system,
                                                      loaded_keys=frozenset({primary_key}))

    reference = "Condition/mCODEPrimaryCancerConditionExample01"
    assert alone.records[0].data["references"][reference]["record"] is False
    assert after_earlier_run.records[0].data["references"][reference]["record"] is True
    assert after_earlier_run.records[0].data["references"][reference]["key"] == primary_key


def test_local_lab_code_translated(tmp_path, ehr_folder):
    observation = load(REPOSITORY_DATA / "changes" / "Observation-frcore-hemoglobin.json")
    observation["code"] = {"coding": [{"system": "https://ehr.chu-example.fr/fhir/CodeSystem/local-lab", "code": "HB"}]}
    (ehr_folder / "observation.json").write_text(json.dumps(observation), encoding="utf-8")

    resources, summary, engine = run(ehr_folder)

    mapped = by_id(resources, "Observation", sonco_id(engine, "Observation", "Observation/frcore-hemoglobin"))
    # The local coding is kept, and the fhir-local-lab-example table adds LOINC 718-7.
    assert mapped["code"]["coding"] == [
        {"system": "https://ehr.chu-example.fr/fhir/CodeSystem/local-lab", "code": "HB"},
        {"system": "http://loinc.org", "code": "718-7", "display": "Hemoglobin [Mass/volume] in Blood"},
    ]


# --- Procedure (CCAM) ---

CCAM = "https://smt.esante.gouv.fr/terminologie-ccam"
NCIT_PROCEDURE = {"system": "http://ncicb.nci.nih.gov/xml/owl/EVS/Thesaurus.owl", "code": "C25218"}


def test_procedure_ccam_code_as_sent(ehr_folder):
    source = load(ehr_folder / "Procedure-frcore-ecg.json")

    resources, summary, engine = run(ehr_folder)

    assert summary.problems == []
    act = by_id(resources, "Procedure", sonco_id(engine, "Procedure", "Procedure/frcore-ecg"))
    assert act["meta"]["profile"] == [profile_url("sonco-procedure")]
    # The CCAM coding and the hospital's local coding, as sent, and no NCIt fallback.
    assert act["code"] == {"coding": [
        {"system": CCAM, "code": "DEQP003", "display": "Électrocardiographie sur au moins 12 dérivations"},
        {"system": "https://ehr.chu-example.fr/fhir/CodeSystem/local-act", "code": "ECG12"},
    ], "text": "ECG 12 dérivations avant chimiothérapie"}
    assert act["code"] == source["code"]
    assert act["status"] == "completed"
    assert act["category"] == source["category"]
    assert act["performedDateTime"] == "2024-02-13T08:30:00+01:00"
    assert act["encounter"] == {"reference": f"Encounter/{sonco_id(engine, 'Encounter', 'Encounter/frcore-stay')}"}
    assert act["reasonReference"] == [{"reference": f"Condition/{sonco_id(engine, 'Condition', 'Condition/frcore-lung-cancer')}"}]
    patient = of_type(resources, "Patient")[0]
    assert act["subject"] == {"reference": f"Patient/{patient['id']}"}


def test_procedure_drops_staff_place_and_numbers(ehr_folder):
    resources, _, engine = run(ehr_folder)

    act = by_id(resources, "Procedure", sonco_id(engine, "Procedure", "Procedure/frcore-ecg"))
    for element in ("identifier", "performer", "location", "note", "recorder", "asserter", "text"):
        assert element not in act, element
    text = json.dumps(act, ensure_ascii=False)
    assert "ACTE-0042" not in text
    assert "Dr Cardiologue" not in text
    assert "salle 3" not in text
    assert "au lit du patient" not in text


def test_mcode_procedure_gets_ncit_fallback():
    source = load(MCODE / "Procedure-mCODECancerRelatedSurgicalProcedureExample01.json")

    resources, summary, engine = run(MCODE)

    assert summary.problems == []
    act = by_id(resources, "Procedure",
                sonco_id(engine, "Procedure", "Procedure/mCODECancerRelatedSurgicalProcedureExample01"))
    # SNOMED CT 359615001 is kept as sent; with no CCAM coding, NCIt C25218 is added beside it.
    assert act["code"]["coding"] == [{"code": "359615001", "system": "http://snomed.info/sct"}, NCIT_PROCEDURE]
    assert act["performedDateTime"] == source["performedDateTime"] == "2019-03-01"
    assert act["bodySite"] == source["bodySite"]
    assert act["extension"] == source["extension"]
    assert act["reasonReference"] == [
        {"reference": f"Condition/{sonco_id(engine, 'Condition', 'Condition/mCODEPrimaryCancerConditionExample01')}"}]
    assert "asserter" not in act


def test_procedure_ccam_oid_adds_uri(ehr_folder):
    act_path = ehr_folder / "Procedure-frcore-ecg.json"
    source = load(act_path)
    source["code"] = {"coding": [{"system": "urn:oid:1.2.250.1.215.300.1", "code": "DEQP003"}]}
    act_path.write_text(json.dumps(source), encoding="utf-8")

    resources, _, engine = run(ehr_folder)

    act = by_id(resources, "Procedure", sonco_id(engine, "Procedure", "Procedure/frcore-ecg"))
    assert act["code"]["coding"] == [
        {"system": "urn:oid:1.2.250.1.215.300.1", "code": "DEQP003"},
        {"system": CCAM, "code": "DEQP003"},
    ]


def test_procedure_text_only_gets_ncit(ehr_folder):
    act_path = ehr_folder / "Procedure-frcore-ecg.json"
    source = load(act_path)
    source["code"] = {"text": "Biopsie pulmonaire"}
    del source["performedDateTime"]
    source["performedPeriod"] = {"start": "2024-02-14T10:00:00+01:00", "end": "2024-02-14T10:40:00+01:00"}
    act_path.write_text(json.dumps(source), encoding="utf-8")

    resources, _, engine = run(ehr_folder)

    act = by_id(resources, "Procedure", sonco_id(engine, "Procedure", "Procedure/frcore-ecg"))
    assert act["code"] == {"coding": [NCIT_PROCEDURE], "text": "Biopsie pulmonaire"}
    assert act["performedPeriod"] == {"start": "2024-02-14T10:00:00+01:00", "end": "2024-02-14T10:40:00+01:00"}
    assert "performedDateTime" not in act


def test_procedure_without_date_still_mapped(ehr_folder):
    act_path = ehr_folder / "Procedure-frcore-ecg.json"
    source = load(act_path)
    del source["performedDateTime"]
    source["performedString"] = "la semaine dernière"
    act_path.write_text(json.dumps(source), encoding="utf-8")

    resources, summary, engine = run(ehr_folder)

    assert summary.problems == []
    act = by_id(resources, "Procedure", sonco_id(engine, "Procedure", "Procedure/frcore-ecg"))
    assert act["code"]["coding"][0]["code"] == "DEQP003"
    assert not any(element.startswith("performed") for element in act)


# --- ResearchSubject (trial inclusion) ---

TREATMENTS_BUNDLE = REPOSITORY / "examples" / "fhir" / "Bundle-sonco-treatments.json"


def test_research_subject_nct_from_study():
    resources, summary, engine = run(TREATMENTS_BUNDLE)

    assert summary.problems == []
    subject = by_id(resources, "ResearchSubject", sonco_id(engine, "ResearchSubject", "ResearchSubject/hop-rs-1004"))
    # From the ResearchStudy hop-study-nct09990002 that study names, whose identifier is NCT09990002.
    assert subject["study"] == {"identifier": {"system": "http://clinicaltrials.gov", "value": "NCT09990002"}}
    assert subject["status"] == "on-study"
    assert subject["period"] == {"start": "2024-05-28"}
    patient = by_id(resources, "Patient", subject["individual"]["reference"].split("/")[1])
    assert [identifier["system"] for identifier in patient["identifier"]] == [PSEUDONYM_SYSTEM]
    assert subject["meta"]["profile"] == [profile_url("sonco-researchsubject")]
    assert "identifier" not in subject
    assert not of_type(resources, "ResearchStudy")


def test_research_subject_logical_study(tmp_path):
    bundle = load(TREATMENTS_BUNDLE)
    subject = next(entry["resource"] for entry in bundle["entry"] if entry["resource"]["resourceType"] == "ResearchSubject")
    subject["study"] = {"identifier": {"system": "https://clinicaltrials.gov", "value": "NCT09990001"}}
    subject["identifier"] = [{"system": "urn:oid:1.2.250.1.71.4.2.9", "value": "INCL-0001"}]
    (tmp_path / "bundle.json").write_text(json.dumps(bundle), encoding="utf-8")

    resources, summary, engine = run(tmp_path / "bundle.json")

    mapped = by_id(resources, "ResearchSubject", sonco_id(engine, "ResearchSubject", "ResearchSubject/hop-rs-1004"))
    assert mapped["study"] == {"identifier": {"system": "http://clinicaltrials.gov", "value": "NCT09990001"}}
    assert "identifier" not in mapped
    assert "INCL-0001" not in json.dumps(resources)
