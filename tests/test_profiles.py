"""SONCO conformance resources: consistency checks without a server, then $validate on a real HAPI.

The server tests use the session's HAPI (fixture `hapi`), which loads profiles/ at start.
"""

import copy
import json
import subprocess
import tarfile
import time
from pathlib import Path

import pytest
import requests
import yaml

from sonco_fhir.canonical import CANONICAL_BASE, MAPPING_TAG_SYSTEM, PSEUDONYM_SYSTEM, profile_url
from sonco_fhir.mapping.provenance import SOURCE_FILE_SYSTEM
from sonco_fhir.profiles import EXAMPLES_DIR, FHIR_VERSION, PACKAGE_NAME, PACKAGE_VERSION, read_resources
from sonco_fhir.profiles import docs as profile_docs
from sonco_fhir.profiles import package as profile_package
from conftest import CASES, REPOSITORY, _free_port
from helpers import map_files

PROFILES_DIR = REPOSITORY / "profiles"
MAPPINGS_DIR = REPOSITORY / "mappings"
RESOURCES = [resource for _, resource in read_resources(PROFILES_DIR)]
EXAMPLES = {path.name: resource for path, resource in read_resources(EXAMPLES_DIR)}


def of_type(resource_type: str) -> list[dict]:
    return [resource for resource in RESOURCES if resource["resourceType"] == resource_type]


STRUCTURES = {resource["url"]: resource for resource in of_type("StructureDefinition")}
# Extension definitions: their examples are the resources that carry them.
EXTENSIONS = {url: structure for url, structure in STRUCTURES.items() if structure["type"] == "Extension"}
PROFILES = {url: structure for url, structure in STRUCTURES.items() if url not in EXTENSIONS}
CODE_SYSTEMS = {resource["url"]: resource for resource in of_type("CodeSystem")}

# Profiles that the engine and the indicators write without a mapping file naming them.
ENGINE_PROFILES = {"sonco-patient", "sonco-provenance", "sonco-measurereport"}

# Profiles the conformance package must define even before a mapping writes them.
REQUIRED_PROFILES = {
    "sonco-patient", "sonco-encounter", "sonco-organization", "sonco-servicerequest", "sonco-task-rcp-amont",
    "sonco-task-sequencing-failure", "sonco-specimen", "sonco-diagnosticreport", "sonco-observation",
    "sonco-observation-variant", "sonco-observation-biomarker", "sonco-observation-genomic",
    "sonco-careplan-rcp-aval", "sonco-condition", "sonco-medicationstatement", "sonco-provenance",
    "sonco-measure", "sonco-measurereport", "sonco-consent", "sonco-procedure-sequencing",
    "sonco-observation-therapeutic-implication", "sonco-observation-fusion", "sonco-observation-copy-number",
}

# Canonical prefixes a SONCO profile may point to: FHIR R4 core, HL7 terminology, and SONCO itself.
CORE_PREFIXES = ("http://hl7.org/fhir/StructureDefinition/", "http://hl7.org/fhir/ValueSet/",
                 "http://terminology.hl7.org/ValueSet/", f"{CANONICAL_BASE}/")


def mapping_files() -> list[tuple[Path, dict]]:
    return [(path, yaml.safe_load(path.read_text(encoding="utf-8"))) for path in sorted(MAPPINGS_DIR.glob("*/*.yaml"))]


def walk(node):
    """Yield every dict inside a parsed JSON or YAML document, depth first."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


def concept(system: str, code: str) -> dict | None:
    for item in CODE_SYSTEMS[system].get("concept", []):
        if item["code"] == code:
            return item
    return None


# --- consistency, no server ---


def test_mapping_profiles_defined():
    named = set(ENGINE_PROFILES)
    for path, mapping in mapping_files():
        named |= {entry["profile"] for entry in mapping["resources"] if "profile" in entry}

    missing = sorted(name for name in named if profile_url(name) not in STRUCTURES)
    assert missing == [], f"profiles named by mappings/ or the engine without a StructureDefinition: {missing}"


def test_required_profiles_defined():
    missing = sorted(name for name in REQUIRED_PROFILES if profile_url(name) not in STRUCTURES)
    assert missing == []


def test_canonical_urls_under_base():
    for resource in RESOURCES:
        if "url" in resource:
            expected = f"{CANONICAL_BASE}/{resource['resourceType']}/{resource['id']}"
            assert resource["url"] == expected, f"{resource['resourceType']}/{resource['id']}"
    for naming in of_type("NamingSystem"):
        values = [unique["value"] for unique in naming["uniqueId"]]
        assert values == [f"{CANONICAL_BASE}/NamingSystem/{naming['id']}"]


def test_profiles_use_core_only():
    for structure in STRUCTURES.values():
        assert structure["fhirVersion"] == FHIR_VERSION
        assert structure["version"] == PACKAGE_VERSION
        assert structure["baseDefinition"].startswith(CORE_PREFIXES), structure["id"]
        assert "snapshot" not in structure, f"{structure['id']}: ship differentials only"
        for element in structure["differential"]["element"]:
            for element_type in element.get("type", []):
                for target in element_type.get("targetProfile", []):
                    assert target.startswith(CORE_PREFIXES), f"{element['id']}: {target}"
            if "binding" in element:
                assert element["binding"]["valueSet"].startswith(CORE_PREFIXES), element["id"]


def test_profiles_name_followed_guide():
    for structure in STRUCTURES.values():
        description = structure["description"]
        followed = "does not claim conformance" in description or "FHIR R4 core only" in description
        assert followed, f"{structure['id']}: the description names no followed guide or says none applies"


def test_profile_bindings_resolve():
    value_sets = {resource["url"] for resource in of_type("ValueSet")}
    for structure in STRUCTURES.values():
        for element in structure["differential"]["element"]:
            value_set = element.get("binding", {}).get("valueSet", "")
            if value_set.startswith(CANONICAL_BASE):
                assert value_set in value_sets, f"{structure['id']} {element['id']}: {value_set}"
    for value_set in of_type("ValueSet"):
        for include in value_set["compose"]["include"]:
            if include["system"].startswith(CANONICAL_BASE) and "concept" not in include:
                assert include["system"] in CODE_SYSTEMS, f"{value_set['id']}: {include['system']}"


def test_conceptmap_targets_in_codesystems():
    for path in sorted((MAPPINGS_DIR / "conceptmaps").glob("*.json")):
        conceptmap = json.loads(path.read_text(encoding="utf-8"))
        for group in conceptmap["group"]:
            if not group.get("target", "").startswith(CANONICAL_BASE):
                continue
            assert group["target"] in CODE_SYSTEMS, f"{path.name}: no CodeSystem {group['target']}"
            for element in group["element"]:
                for target in element.get("target", []):
                    defined = concept(group["target"], target["code"])
                    assert defined is not None, f"{path.name}: {target['code']} is not in {group['target']}"
                    assert defined["display"] == target["display"], f"{path.name}: display of {target['code']}"


def test_mapping_codes_in_codesystems():
    for path, mapping in mapping_files():
        for node in walk(mapping):
            system = node.get("system")
            if not isinstance(system, str) or not system.startswith(f"{CANONICAL_BASE}/CodeSystem/"):
                continue
            assert system in CODE_SYSTEMS, f"{path.name}: no CodeSystem {system}"
            defined = concept(system, node["code"])
            assert defined is not None, f"{path.name}: {node['code']} is not in {system}"
            assert defined["display"] == node.get("display", defined["display"]), f"{path.name}: display of {node['code']}"


def test_identifier_systems_defined():
    naming_systems = {unique["value"] for naming in of_type("NamingSystem") for unique in naming["uniqueId"]}
    used = {PSEUDONYM_SYSTEM, SOURCE_FILE_SYSTEM}
    for _, mapping in mapping_files():
        used |= {node["system"] for node in walk(mapping)
                 if isinstance(node.get("system"), str) and node["system"].startswith(f"{CANONICAL_BASE}/NamingSystem/")}

    assert sorted(used - naming_systems) == []


def test_mapping_tag_system_defined():
    assert MAPPING_TAG_SYSTEM in CODE_SYSTEMS
    assert CODE_SYSTEMS[MAPPING_TAG_SYSTEM]["content"] == "not-present"


def test_every_profile_has_example():
    for url, structure in PROFILES.items():
        examples = [name for name, example in EXAMPLES.items() if url in example.get("meta", {}).get("profile", [])]
        assert len(examples) == 1, f"{structure['id']}: examples {examples}"
        assert EXAMPLES[examples[0]]["resourceType"] == structure["type"]


def test_package_contents(tmp_path):
    target = profile_package.write_package(PROFILES_DIR, tmp_path)

    assert target.name == f"{PACKAGE_NAME}-{PACKAGE_VERSION}.tgz"
    with tarfile.open(target, "r:gz") as archive:
        names = archive.getnames()
        manifest = json.load(archive.extractfile("package/package.json"))
        index = json.load(archive.extractfile("package/.index.json"))
        packaged_patient = json.load(archive.extractfile("package/StructureDefinition-sonco-patient.json"))
    assert manifest["name"] == PACKAGE_NAME
    assert manifest["version"] == PACKAGE_VERSION
    assert manifest["fhirVersions"] == ["4.0.1"]
    assert manifest["dependencies"] == {"hl7.fhir.r4.core": "4.0.1"}
    assert manifest["canonical"] == CANONICAL_BASE
    indexed = {(entry["resourceType"], entry["id"]) for entry in index["files"]}
    assert indexed == {(resource["resourceType"], resource["id"]) for resource in RESOURCES}
    for entry in index["files"]:
        assert f"package/{entry['filename']}" in names
    assert packaged_patient == STRUCTURES[profile_url("sonco-patient")]
    assert len([name for name in names if name.startswith("package/example/") and name.endswith(".json")]) == len(EXAMPLES) + 1


def test_package_reproducible(tmp_path):
    first = profile_package.write_package(PROFILES_DIR, tmp_path / "first").read_bytes()
    second = profile_package.write_package(PROFILES_DIR, tmp_path / "second").read_bytes()

    assert first == second


def test_package_command(tmp_path):
    assert profile_package.main(["--profiles-dir", str(PROFILES_DIR), "--output-dir", str(tmp_path)]) == 0
    assert (tmp_path / f"{PACKAGE_NAME}-{PACKAGE_VERSION}.tgz").is_file()


def test_docs_up_to_date():
    output_dir = REPOSITORY / "docs" / "profiles"
    pages = profile_docs.render_all(PROFILES_DIR, output_dir)

    stale = [path.name for path, text in pages.items() if not path.exists() or path.read_text(encoding="utf-8") != text]
    assert stale == [], "run python -m sonco_fhir.profiles.docs"
    assert len(pages) == 2 * (len(STRUCTURES) + 1)


def test_docs_pages_bilingual():
    pages = profile_docs.render_all(PROFILES_DIR, REPOSITORY / "docs" / "profiles")
    patient_fr = pages[REPOSITORY / "docs" / "profiles" / "sonco-patient.fr.md"]
    patient_en = pages[REPOSITORY / "docs" / "profiles" / "sonco-patient.md"]

    assert patient_fr.startswith("# Patient pseudonymisé SONCO")
    assert "La date de naissance se réduit à l'année" in patient_fr
    assert patient_en.startswith("# SONCO pseudonymised Patient")
    assert "sonco-pat-2" in patient_en


# --- $validate on the session's HAPI server ---


def validation_issues(base_url: str, resource: dict, profile: str) -> list[dict]:
    """Return the issues of `POST [type]/$validate?profile=...` for `resource`."""
    response = requests.post(
        f"{base_url}/{resource['resourceType']}/$validate",
        params={"profile": profile},
        data=json.dumps(resource),
        headers={"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"},
        timeout=120,
    )
    outcome = response.json()
    assert outcome.get("resourceType") == "OperationOutcome", f"HTTP {response.status_code}: {response.text[:500]}"
    return outcome.get("issue", [])


def errors_of(issues: list[dict]) -> list[str]:
    return [issue.get("diagnostics", "") for issue in issues if issue["severity"] in ("error", "fatal")]


def describe(issue_texts: list[str]) -> str:
    return "\n  ".join(issue_texts)


@pytest.mark.server
def test_conformance_resources_on_server(hapi):
    for resource in RESOURCES:
        if "url" not in resource:
            continue
        found = requests.get(f"{hapi}/{resource['resourceType']}", params={"url": resource["url"]}, timeout=30).json()
        assert found.get("total") == 1, f"{resource['url']} is not on the server"


@pytest.mark.server
def test_snapshots_generate(hapi):
    for structure in STRUCTURES.values():
        response = requests.get(f"{hapi}/StructureDefinition/{structure['id']}/$snapshot", timeout=120)

        assert response.status_code == 200, f"{structure['id']}: {response.text[:500]}"
        snapshot = response.json().get("snapshot", {}).get("element", [])
        assert len(snapshot) > len(structure["differential"]["element"]), structure["id"]


@pytest.mark.server
def test_server_log_clean(hapi, tmp_path_factory):
    # The `hapi` fixture keeps its server log under its own temporary folder (hapiN/server/hapi.log).
    logs = list(tmp_path_factory.getbasetemp().glob("hapi[0-9]*/server/hapi.log"))
    assert len(logs) == 1, f"server logs found: {logs}"
    lines = logs[0].read_text(encoding="utf-8", errors="replace").splitlines()

    summaries = [line for line in lines if "Loaded conformance resources from" in line]
    assert summaries, "the server did not log the loading of profiles/"
    assert summaries[-1].rstrip().endswith("0 skipped, 0 failed"), summaries[-1]
    # HAPI pre-expands stored ValueSets in a scheduled job and logs a WARN for each code validated
    # against one before that job has run: a timing message, not a defect of the resources.
    problems = [line for line in lines
                if (" WARN " in line or " ERROR " in line)
                and ("sonco.example" in line or "ConformanceResourceLoader" in line or "napshot" in line)
                and "not ready for persistence-backed invocation" not in line]
    assert problems == []


@pytest.mark.server
@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_example_validates(hapi, name):
    example = EXAMPLES[name]
    errors = errors_of(validation_issues(hapi, example, example["meta"]["profile"][0]))

    assert errors == [], f"{name}:\n  {describe(errors)}"


def test_measures_declare_profile():
    for measure in of_type("Measure"):
        assert measure.get("meta", {}).get("profile") == [profile_url("sonco-measure")], measure["id"]


@pytest.mark.server
@pytest.mark.parametrize("measure", of_type("Measure"), ids=lambda measure: measure["id"])
def test_measure_validates(hapi, measure):
    errors = errors_of(validation_issues(hapi, measure, profile_url("sonco-measure")))

    assert errors == [], f"{measure['id']}:\n  {describe(errors)}"


def _patient_with_ins(patient):
    patient["identifier"].append({
        "type": {"coding": [{"system": "https://hl7.fr/ig/fhir/core/CodeSystem/fr-core-cs-v2-0203", "code": "INS-NIR"}]},
        "system": "urn:oid:1.2.250.1.213.1.4.8",
        "value": "279035121518989",
    })


def _patient_ins_instead_of_pseudonym(patient):
    patient["identifier"][0].update(system="urn:oid:1.2.250.1.213.1.4.10", value="279035121518989")


def _replace_value(observation, **value):
    for key in [key for key in observation if key.startswith("value")]:
        del observation[key]
    observation.update(value)


def _component_as_string(observation, index, text):
    component = observation["component"][index]
    for key in [key for key in component if key.startswith("value")]:
        del component[key]
    component["valueString"] = text


# (case, example file, change, text expected in one error)
BROKEN = [
    ("patient-without-identifier", "Patient-sonco-patient-example.json",
     lambda r: r.pop("identifier"), "Patient.identifier: minimum required = 1"),
    ("patient-with-ins", "Patient-sonco-patient-example.json", _patient_with_ins, "sonco-pat-2"),
    ("patient-ins-as-only-identifier", "Patient-sonco-patient-example.json", _patient_ins_instead_of_pseudonym, "sonco-pat-2"),
    ("patient-with-name", "Patient-sonco-patient-example.json",
     lambda r: r.update(name=[{"family": "PAT-TROIS", "given": ["DOMINIQUE"]}]), "Patient.name: max allowed = 0"),
    ("patient-with-address", "Patient-sonco-patient-example.json",
     lambda r: r.update(address=[{"city": "Paris"}]), "Patient.address: max allowed = 0"),
    ("patient-full-birth-date", "Patient-sonco-patient-example.json",
     lambda r: r.update(birthDate="1979-03-28"), "sonco-pat-1"),
    ("patient-pseudonym-wrong-type-system", "Patient-sonco-patient-example.json",
     lambda r: r["identifier"][0]["type"]["coding"][0].update(system="http://terminology.hl7.org/CodeSystem/v2-0203"),
     "The pattern [system http://terminology.hl7.org/CodeSystem/v3-ObservationValue, code PSEUDED"),
    ("encounter-with-visit-number", "Encounter-sonco-encounter-example.json",
     lambda r: r.update(identifier=[{"system": "urn:oid:1.2.250.1.71.4.2.1", "value": "NDA-0001"}]),
     "Encounter.identifier: max allowed = 0"),
    ("organization-without-name", "Organization-sonco-organization-example.json",
     lambda r: r.pop("name"), "Organization.name: minimum required = 1"),
    ("servicerequest-without-authoredon", "ServiceRequest-sonco-servicerequest-example.json",
     lambda r: r.pop("authoredOn"), "ServiceRequest.authoredOn: minimum required = 1"),
    ("servicerequest-without-request-number", "ServiceRequest-sonco-servicerequest-example.json",
     lambda r: r["identifier"][0].update(system="urn:example:other"), "sonco-sr-1"),
    ("task-rcp-amont-wrong-code-system", "Task-sonco-task-rcp-amont-example.json",
     lambda r: r["code"]["coding"][0].update(system="http://example.org/milestone"),
     "The pattern [system https://sonco.example/fhir/CodeSystem/sonco-pathway-milestone, code rcp-amont-validation"),
    ("task-rcp-amont-without-date", "Task-sonco-task-rcp-amont-example.json",
     lambda r: r.pop("executionPeriod"), "Task.executionPeriod: minimum required = 1"),
    ("task-failure-without-reason", "Task-sonco-task-sequencing-failure-example.json",
     lambda r: r.pop("statusReason"), "Task.statusReason: minimum required = 1"),
    ("task-failure-unknown-reason", "Task-sonco-task-sequencing-failure-example.json",
     lambda r: r["statusReason"]["coding"][0].update(code="too-late"),
     "None of the codings provided are in the value set 'SONCO sequencing failure reasons'"),
    ("task-failure-not-failed", "Task-sonco-task-sequencing-failure-example.json",
     lambda r: r.update(status="completed"), "but is fixed to 'failed'"),
    ("specimen-without-subject", "Specimen-sonco-specimen-example.json",
     lambda r: r.pop("subject"), "Specimen.subject: minimum required = 1"),
    ("specimen-cellularity-over-100", "Specimen-sonco-specimen-example.json",
     lambda r: r["extension"][0]["valueQuantity"].update(value=140), "sonco-tc-1"),
    ("specimen-cellularity-as-text", "Specimen-sonco-specimen-example.json",
     lambda r: r["extension"][0].update(valueString="60 %") or r["extension"][0].pop("valueQuantity"),
     "sonco-tumour-cellularity"),
    ("specimen-cellularity-wrong-unit", "Specimen-sonco-specimen-example.json",
     lambda r: r["extension"][0]["valueQuantity"].update(code="1"), "sonco-tumour-cellularity"),
    ("report-genomic-without-issued", "DiagnosticReport-sonco-diagnosticreport-example.json",
     lambda r: r.pop("issued"), "sonco-dr-1"),
    ("report-with-rendered-document", "DiagnosticReport-sonco-diagnosticreport-example.json",
     lambda r: r.update(presentedForm=[{"contentType": "application/pdf", "data": "JVBERi0="}]),
     "DiagnosticReport.presentedForm: max allowed = 0"),
    ("observation-without-subject", "Observation-sonco-observation-example.json",
     lambda r: r.pop("subject"), "Observation.subject: minimum required = 1"),
    ("variant-value-not-presence", "Observation-sonco-observation-variant-example.json",
     lambda r: _replace_value(r, valueCodeableConcept={"coding": [{"system": "http://loinc.org", "code": "LA6684-0"}]}),
     "sonco-var-1"),
    ("variant-wrong-code-system", "Observation-sonco-observation-variant-example.json",
     lambda r: r["code"]["coding"][0].update(system="http://snomed.info/sct"),
     "The pattern [system http://loinc.org, code 69548-6"),
    ("variant-allele-frequency-as-text", "Observation-sonco-observation-variant-example.json",
     lambda r: _component_as_string(r, 4, "6,6 %"), "allows for the type Quantity but found type string"),
    ("fusion-with-one-gene", "Observation-sonco-observation-fusion-example.json",
     lambda r: r["component"].pop(1), "Observation.component:gene-studied': minimum required = 2"),
    ("copy-number-without-count", "Observation-sonco-observation-copy-number-example.json",
     lambda r: r["component"].pop(1), "Observation.component:copy-number': a matching slice is required"),
    ("biomarker-tmb-as-text", "Observation-sonco-observation-biomarker-example.json",
     lambda r: _replace_value(r, valueString="3,1 mut/Mb"), "sonco-bio-1"),
    ("genomic-without-subject", "Observation-sonco-observation-genomic-example.json",
     lambda r: r.pop("subject"), "Observation.subject: minimum required = 1"),
    ("implication-without-source", "Observation-sonco-observation-therapeutic-implication-example.json",
     lambda r: r.pop("derivedFrom"), "Observation.derivedFrom: minimum required = 1"),
    ("careplan-wrong-category-system", "CarePlan-sonco-careplan-rcp-aval-example.json",
     lambda r: r["category"][0]["coding"][0].update(system="http://example.org/milestone"),
     "CarePlan.category:rcp-aval': a matching slice is required"),
    ("careplan-recommendation-wrong-system", "CarePlan-sonco-careplan-rcp-aval-example.json",
     lambda r: r["activity"][0]["detail"]["code"]["coding"][0].update(system="http://example.org/rcp"),
     "None of the codings provided are in the value set 'SONCO downstream tumour board recommendations'"),
    ("condition-without-code", "Condition-sonco-condition-example.json",
     lambda r: r.pop("code"), "Condition.code: minimum required = 1"),
    ("medication-without-subject", "MedicationStatement-sonco-medicationstatement-example.json",
     lambda r: r.pop("subject"), "MedicationStatement.subject: minimum required = 1"),
    ("provenance-without-source-file", "Provenance-sonco-provenance-example.json",
     lambda r: r["entity"][0]["what"]["identifier"].update(system="urn:example:file"), "sonco-prov-1"),
    ("provenance-without-assembler", "Provenance-sonco-provenance-example.json",
     lambda r: r["agent"].pop(0), "Provenance.agent:assembler': a matching slice is required"),
    ("measure-foreign-url", "Measure-sonco-measure-example.json",
     lambda r: r.update(url="http://example.org/Measure/delay"), "sonco-ms-1"),
    ("measure-without-scoring", "Measure-sonco-measure-example.json",
     lambda r: r.pop("scoring"), "Measure.scoring: minimum required = 1"),
    ("measure-without-aggregate-method", "Measure-sonco-measure-example.json",
     lambda r: r["group"][0]["population"][2].pop("extension"), "sonco-ms-2"),
    ("measure-continuous-without-observation", "Measure-sonco-measure-example.json",
     lambda r: r["group"][0]["population"].pop(2), "sonco-ms-2"),
    ("measure-population-without-code", "Measure-sonco-measure-example.json",
     lambda r: r["group"][0]["population"][0].pop("code"), "Measure.group.population.code: minimum required = 1"),
    ("measurereport-individual", "MeasureReport-sonco-measurereport-example.json",
     lambda r: r.update(type="individual"), "but is fixed to 'summary'"),
    ("measurereport-foreign-measure", "MeasureReport-sonco-measurereport-example.json",
     lambda r: r.update(measure="http://example.org/Measure/other"), "sonco-mr-1"),
    ("consent-with-signed-form", "Consent-sonco-consent-example.json",
     lambda r: r.update(sourceAttachment={"contentType": "application/pdf", "title": "Consentement signé"}),
     "Consent.source[x]: max allowed = 0"),
    ("procedure-without-request", "Procedure-sonco-procedure-sequencing-example.json",
     lambda r: r.pop("basedOn"), "Procedure.basedOn: minimum required = 1"),
    ("hospital-procedure-without-code", "Procedure-sonco-procedure-example.json",
     lambda r: r.pop("code"), "Procedure.code: minimum required = 1"),
    ("hospital-procedure-with-act-number", "Procedure-sonco-procedure-example.json",
     lambda r: r.update(identifier=[{"system": "urn:oid:1.2.250.1.71.4.2.1", "value": "ACTE-0042"}]),
     "Procedure.identifier: max allowed = 0"),
    ("hospital-procedure-without-date", "Procedure-sonco-procedure-example.json",
     lambda r: r.pop("performedDateTime"), "Procedure.performed[x]: minimum required = 1"),
    ("hospital-procedure-with-performer", "Procedure-sonco-procedure-example.json",
     lambda r: r.update(performer=[{"actor": {"display": "Dr Cardiologue"}}]), "Procedure.performer: max allowed = 0"),
    ("hospital-procedure-with-note", "Procedure-sonco-procedure-example.json",
     lambda r: r.update(note=[{"text": "Examen au lit"}]), "Procedure.note: max allowed = 0"),
    ("document-with-content", "DocumentReference-sonco-documentreference-example.json",
     lambda r: r["content"][0]["attachment"].update(data="RG9jdW1lbnQ="),
     "DocumentReference.content.attachment.data: max allowed = 0"),
    ("document-without-type", "DocumentReference-sonco-documentreference-example.json",
     lambda r: r.pop("type"), "DocumentReference.type: minimum required = 1"),
    ("researchsubject-study-not-nct", "ResearchSubject-sonco-researchsubject-example.json",
     lambda r: r["study"]["identifier"].update(value="EUDRACT-2024-0001"), "sonco-rs-1"),
    ("researchsubject-with-identifier", "ResearchSubject-sonco-researchsubject-example.json",
     lambda r: r.update(identifier=[{"system": "urn:oid:1.2.250.1.71.4.2.9", "value": "INCL-0001"}]),
     "ResearchSubject.identifier: max allowed = 0"),
    ("researchsubject-study-as-reference", "ResearchSubject-sonco-researchsubject-example.json",
     lambda r: r["study"].update(reference="ResearchStudy/study-1"), "ResearchSubject.study.reference: max allowed = 0"),
    ("order-with-placer-number", "ServiceRequest-sonco-servicerequest-order-example.json",
     lambda r: r.update(identifier=[{"system": "urn:oid:1.2.250.1.71.4.2.1", "value": "1101"}]),
     "ServiceRequest.identifier: max allowed = 0"),
]


@pytest.mark.server
@pytest.mark.parametrize(("case", "name", "change", "expected"), BROKEN, ids=[case[0] for case in BROKEN])
def test_broken_example_rejected(hapi, case, name, change, expected):
    resource = copy.deepcopy(EXAMPLES[name])
    change(resource)

    errors = errors_of(validation_issues(hapi, resource, resource["meta"]["profile"][0]))

    assert any(expected in error for error in errors), f"{case}: no error containing {expected!r} in:\n  {describe(errors)}"


def test_broken_cases_cover_every_profile():
    covered = {EXAMPLES[name]["meta"]["profile"][0] for _, name, _, _ in BROKEN}
    assert sorted(set(PROFILES) - covered) == []


def test_every_extension_used_by_an_example():
    for url, structure in EXTENSIONS.items():
        users = [name for name, example in EXAMPLES.items()
                 if any(extension.get("url") == url for extension in walk(example.get("extension", [])))]
        assert users, f"{structure['id']}: no example carries it"
        contexts = {context["expression"] for context in structure["context"]}
        assert {EXAMPLES[name]["resourceType"] for name in users} <= contexts, structure["id"]


# --- a second HAPI server that installs the built FHIR package itself (sonco.profiles-package) ---


@pytest.fixture(scope="module")
def package_server(hapi, tmp_path_factory):
    """Start a HAPI server given only `--sonco.profiles-package`; yield its FHIR base URL and log path.

    It depends on `hapi` so that the session has already built server/target/sonco-fhir-server.jar.
    """
    from sonco_fhir.server.manage import JAR_NAME, JAVA_OPTIONS, START_TIMEOUT_SECONDS

    folder = tmp_path_factory.mktemp("package-server")
    package = profile_package.write_package(PROFILES_DIR, folder / "build")
    port = _free_port()
    base_url = f"http://127.0.0.1:{port}/fhir"
    server_log = folder / "hapi.log"
    command = [
        "java", *JAVA_OPTIONS, "-jar", str(REPOSITORY / "server" / "target" / JAR_NAME),
        f"--server.port={port}", f"--sonco.data-dir={folder / 'data'}", f"--sonco.profiles-package={package}",
    ]
    with open(server_log, "w", encoding="utf-8") as handle:
        process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while not _metadata_ready(base_url, timeout=max(deadline - time.monotonic(), 1)):
            if process.poll() is not None:
                pytest.fail(f"the package server exited with code {process.returncode}; see {server_log}")
            if time.monotonic() > deadline:
                pytest.fail(f"the package server was not ready within {START_TIMEOUT_SECONDS} s; see {server_log}")
            time.sleep(1)
        yield base_url, server_log
    finally:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _metadata_ready(base_url: str, timeout: float) -> bool:
    # The server keeps waiting requests that arrive during startup, so a short timeout would end in a broken pipe there.
    try:
        return requests.get(f"{base_url}/metadata", timeout=timeout).status_code == 200
    except requests.RequestException:
        return False


@pytest.mark.server
def test_package_install_logged(package_server):
    _, server_log = package_server
    lines = server_log.read_text(encoding="utf-8", errors="replace").splitlines()

    installed = [line for line in lines if f"Installed FHIR package {PACKAGE_NAME}#{PACKAGE_VERSION}" in line]
    assert len(installed) == 1, "no summary line of the package installation in the server log"
    assert f"{len(RESOURCES)} resources created or updated" in installed[0], installed[0]
    errors = [line for line in lines if " ERROR " in line and "ConformancePackageInstaller" in line]
    assert errors == []
    assert not any("Loading conformance resources from" in line for line in lines)


@pytest.mark.server
def test_package_resources_on_server(package_server):
    base_url, _ = package_server
    for resource in RESOURCES:
        if "url" not in resource:
            continue
        found = requests.get(f"{base_url}/{resource['resourceType']}", params={"url": resource["url"]}, timeout=30).json()
        assert found.get("total") == 1, f"{resource['url']} is not on the package server"


@pytest.mark.server
def test_package_profile_validates(package_server):
    base_url, _ = package_server
    patient = EXAMPLES["Patient-sonco-patient-example.json"]
    broken = copy.deepcopy(patient)
    broken.pop("identifier")

    valid_errors = errors_of(validation_issues(base_url, patient, profile_url("sonco-patient")))
    broken_errors = errors_of(validation_issues(base_url, broken, profile_url("sonco-patient")))

    assert valid_errors == [], describe(valid_errors)
    assert any("Patient.identifier: minimum required = 1" in error for error in broken_errors), describe(broken_errors)


# --- every resource the connectors produce from the examples and the real cases ---


def _inputs() -> list[tuple[str, tuple[Path, ...]]]:
    examples = REPOSITORY / "examples"
    inputs = [("spice", tuple(sorted((examples / "spice").iterdir()))),
              ("hygen", tuple(sorted((examples / "hygen").iterdir())))]
    inputs += [("hl7v2", (path,)) for path in sorted((examples / "hl7v2").iterdir())]
    inputs += [("fhir", (path,)) for path in sorted((examples / "fhir").iterdir())]
    for folder in ("hl7v2-ansforge-pamfr-cisis", "hl7v2-microsoft-fhir-converter", "hl7v2-linuxforhealth-converter"):
        inputs += [("hl7v2", (path,)) for path in sorted((CASES / folder).iterdir()) if path.name not in KNOWN_FAILURES]
    inputs += [("hl7v2", (path,)) for path in sorted((REPOSITORY / "tests" / "data" / "hl7v2").glob("*.hl7"))]
    inputs += [("fhir", (REPOSITORY / "tests" / "data" / "fhir_ehr" / "seed",))]
    for folder in ("fhir-fr-core", "fhir-mcode-stu1", "fhir-genomics-reporting", "fhir-bundles-misc"):
        inputs += [("fhir", (path,)) for path in sorted((CASES / folder).glob("*.json"))]
    return inputs


KNOWN_FAILURES: dict[str, str] = {}
INPUTS = _inputs()


def _input_id(kind: str, paths: tuple[Path, ...]) -> str:
    name = f"{paths[0].parent.name}/{paths[0].name}" if len(paths) == 1 else paths[0].parent.name
    return f"{kind}:{name}"


def assert_mapped_resources_conform(base_url: str, kind: str, paths: tuple[Path, ...]):
    resources, _ = map_files(kind, *paths)
    failures = []
    for resource in resources:
        profiles = resource.get("meta", {}).get("profile", [])
        assert len(profiles) == 1, f"{resource['resourceType']}/{resource['id']} declares profiles {profiles}"
        for error in errors_of(validation_issues(base_url, resource, profiles[0])):
            failures.append(f"{resource['resourceType']} {profiles[0].rsplit('/', 1)[-1]}: {error}")

    assert failures == [], f"{_input_id(kind, paths)}: {len(failures)} errors:\n  {describe(failures)}"


@pytest.mark.server
@pytest.mark.parametrize(("kind", "paths"), INPUTS, ids=[_input_id(kind, paths) for kind, paths in INPUTS])
def test_mapped_resources_conform(hapi, kind, paths):
    assert_mapped_resources_conform(hapi, kind, paths)


def test_local_units_not_coded_as_ucum():
    # LAB-ORU-1 sends OBX-6 units such as tera.l-1 with no coding system: they stay text.
    resources, _ = map_files("hl7v2", CASES / "hl7v2-microsoft-fhir-converter" / "LAB-ORU-1.hl7")
    quantities = [r["valueQuantity"] for r in resources if "valueQuantity" in r]

    assert quantities
    assert all("system" not in quantity for quantity in quantities)
