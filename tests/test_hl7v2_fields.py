"""HL7 v2 field-level care: delete values, repetitions, escape sequences, character sets, decimals, versions."""

import json
from pathlib import Path

import pytest
import requests

from sonco_fhir.connectors.hl7v2 import read_files
from sonco_fhir.config import load_settings
from sonco_fhir.loading.bundle import to_json, transaction_bundle
from sonco_fhir.loading.hapi import FhirServer
from sonco_fhir.loading.patients import merge_patient
from sonco_fhir.pipeline import build_engine, load_records, map_source
from helpers import component, map_files, of_type
from conftest import CASES

ANS_ADMISSION = CASES / "hl7v2-ansforge-pamfr-cisis" / "SGL_admission_ADT_A01.er7"
IPP = "000003^^^CHU-X&000897406&N^PI"


def write(tmp_path: Path, name: str, lines: list[str], encoding: str = "utf-8") -> Path:
    path = tmp_path / name
    path.write_bytes("\r".join(lines).encode(encoding))
    return path


def segment(name: str, fields: dict[int, str]) -> str:
    """Write a segment from its fields by number, the others empty."""
    return "|".join([name] + [fields.get(number, "") for number in range(1, max(fields) + 1)])


def oru(obx: list[str], msh: str = "MSH|^~\\&|LAB|CHU-X|DPI|CHU-X|20240415093000||ORU^R01^ORU_R01|R-1|P|2.5",
        pid: str = f"PID|1||{IPP}||PAT-TROIS^DOMINIQUE||19790328|F") -> list[str]:
    return [msh, pid, "OBR|1|P-1|F-1|11502-2^Laboratory report^LN|||20240414080000", *obx]


def only_record(path: Path):
    result = read_files([path])
    assert result.problems == []
    (record,) = result.records
    return record


# --- "" (delete) and empty ---


def test_delete_value_distinct_from_empty(tmp_path):
    pid = segment("PID", {1: "1", 3: IPP, 5: "PAT-TROIS", 7: "19790328", 8: '""', 29: '""', 30: '""'})
    path = write(tmp_path, "delete.hl7", ["MSH|^~\\&|GAM|CHU-X|DPI|CHU-X|20240306111154||ADT^A08^ADT_A01|1|P|2.5", pid])
    pid = only_record(path).data["PID"]

    assert "8" not in pid
    assert "29" not in pid
    assert "30" not in pid
    assert pid["_deleted"] == ["8", "29", "30"]  # PID-8, PID-29 and PID-30 were sent as ""; PID-9 to PID-28 were empty


def test_delete_replaces_held_death_and_sex(tmp_path):
    pid = segment("PID", {1: "1", 3: IPP, 5: "PAT-TROIS", 7: "19790328", 8: '""', 29: '""', 30: '""'})
    path = write(tmp_path, "undo-death.hl7", ["MSH|^~\\&|GAM|CHU-X|DPI|CHU-X|20240306111154||ADT^A08^ADT_A01|1|P|2.5", pid])
    resources, summary = map_files("hl7v2", path)

    assert summary.problems == []
    patient = of_type(resources, "Patient")[0]
    assert patient["deceasedBoolean"] is False
    assert patient["gender"] == "unknown"  # PID-8 ""
    held = {"resourceType": "Patient", "id": patient["id"], "gender": "female", "birthDate": "1979",
            "deceasedDateTime": "2024-03-01T10:00:00+01:00"}
    merged = merge_patient(held, patient)
    assert merged["deceasedBoolean"] is False
    assert "deceasedDateTime" not in merged  # one deceased[x] only
    assert merged["gender"] == "unknown"
    assert merged["birthDate"] == "1979"


def test_delete_of_discharge_removes_end(tmp_path):
    pv1 = segment("PV1", {1: "1", 2: "I", 19: "000897406^^^CHU-X&000897406&M^VN", 44: "20240306110000", 45: '""'})
    path = write(tmp_path, "undo-discharge.hl7", [
        "MSH|^~\\&|GAM|CHU-X|DPI|CHU-X|20240306111154||ADT^A08^ADT_A01|1|P|2.5", f"PID|1||{IPP}||PAT-TROIS||19790328|F", pv1])
    resources, _ = map_files("hl7v2", path)
    (encounter,) = of_type(resources, "Encounter")

    # The update message removes PV1-45: the Encounter, sent whole, has no end and is in progress again.
    assert encounter["period"] == {"start": "2024-03-06T11:00:00+01:00"}
    assert encounter["status"] == "in-progress"


# --- repetitions ---


def test_empty_first_repetition(tmp_path):
    path = write(tmp_path, "empty-first.hl7", ["MSH|^~\\&|GAM|CHU-X|DPI|CHU-X|20240306111154||ADT^A28^ADT_A05|1|P|2.5",
                                               f"PID|1||~{IPP}||PAT-TROIS||19790328|F"])
    pid = only_record(path).data["PID"]

    assert pid["3"] == "000003"
    assert pid["3.4.2"] == "000897406"
    assert pid["3[]"] == [{"1": "000003", "1.1": "000003", "4": "CHU-X", "4.1": "CHU-X", "4.2": "000897406", "4.3": "N",
                           "5": "PI", "5.1": "PI"}]

    same, _ = map_files("hl7v2", ANS_ADMISSION, path)
    assert len(of_type(same, "Patient")) == 1  # the IPP of the second repetition finds the patient


# --- escape sequences ---


@pytest.mark.parametrize(("delimiters", "value", "expected"), [
    ("|^~\\&", r"a\F\b\S\c\T\d\R\e\E\f\X41\g\.br\h", "a|b^c&d~e\\fAg\nh"),
    ("#*!%@", "a%F%b%S%c%T%d%R%e%E%f%X41%g%.br%h", "a#b*c@d!e%fAg\nh"),
], ids=["default", "own-msh-2"])
def test_escape_sequences_use_msh_2(tmp_path, delimiters, value, expected):
    field, component_sep, repetition, escape, subcomponent = delimiters
    msh = f"MSH{field}{component_sep}{repetition}{escape}{subcomponent}" + field.join(
        ["", "LAB", "CHU-X", "DPI", "CHU-X", "20240415093000", "", f"ORU{component_sep}R01", "R-1", "P", "2.5"])
    pid = field.join(["PID", "1", "", IPP.replace("^", component_sep).replace("&", subcomponent), "", "PAT-TROIS"])
    obr = field.join(["OBR", "1", "P-1", "F-1", f"11502-2{component_sep}Report{component_sep}LN"])
    obx = field.join(["OBX", "1", "ST", f"8251-1{component_sep}Service comment{component_sep}LN", "", value])
    resources, summary = map_files("hl7v2", write(tmp_path, "escapes.hl7", [msh, pid, obr, obx]))

    assert summary.problems == []
    (observation,) = of_type(resources, "Observation")
    assert observation["valueString"] == expected


# --- MSH-18 character sets ---


def test_latin1_message_decoded(tmp_path):
    lines = oru(["OBX|1|ST|8251-1^Commentaire^LN||prélèvement hémolysé"],
                msh="MSH|^~\\&|LAB|CHU-X|DPI|CHU-X|20240415093000||ORU^R01^ORU_R01|R-1|P|2.5|||||FRA|8859/1")
    resources, summary = map_files("hl7v2", write(tmp_path, "latin1.hl7", lines, encoding="latin-1"))

    assert summary.problems == []
    assert of_type(resources, "Observation")[0]["valueString"] == "prélèvement hémolysé"


def test_latin1_bytes_declared_utf8_rejected(tmp_path):
    lines = oru(["OBX|1|ST|8251-1^Commentaire^LN||prélèvement"],
                msh="MSH|^~\\&|LAB|CHU-X|DPI|CHU-X|20240415093000||ORU^R01^ORU_R01|R-1|P|2.5|||||FRA|UNICODE UTF-8")
    _, summary = map_files("hl7v2", write(tmp_path, "wrong-charset.hl7", lines, encoding="latin-1"))

    assert summary.records_rejected == 1
    problem = summary.problems[0]
    assert "MSH-18" in problem.message
    assert "0xE9" in problem.message  # é of OBX-5, on the fourth segment
    assert "ligne 4" in problem.message
    assert "prélèvement" not in problem.message
    assert "MSH-18" in problem.fix


def test_unknown_charset_rejected(tmp_path):
    lines = oru(["OBX|1|ST|8251-1^Comment^LN||text"],
                msh="MSH|^~\\&|LAB|CHU-X|DPI|CHU-X|20240415093000||ORU^R01^ORU_R01|R-1|P|2.5|||||FRA|EBCDIC")
    _, summary = map_files("hl7v2", write(tmp_path, "ebcdic.hl7", lines))

    assert summary.records_rejected == 1
    assert "« EBCDIC » inconnu dans MSH-18" in summary.problems[0].message
    assert "UNICODE UTF-8" in summary.problems[0].message


def test_utf8_without_msh_18(tmp_path):
    lines = oru(["OBX|1|ST|8251-1^Commentaire^LN||prélèvement"])
    resources, _ = map_files("hl7v2", write(tmp_path, "utf8.hl7", lines))

    assert of_type(resources, "Observation")[0]["valueString"] == "prélèvement"


# --- versions ---


@pytest.mark.parametrize("version", ["3.0", "2.10", ""])
def test_unknown_version_rejected(tmp_path, version):
    lines = oru(["OBX|1|ST|8251-1^Comment^LN||text"],
                msh=f"MSH|^~\\&|LAB|CHU-X|DPI|CHU-X|20240415093000||ORU^R01^ORU_R01|R-1|P|{version}")
    _, summary = map_files("hl7v2", write(tmp_path, "version.hl7", lines))

    assert summary.records_rejected == 1
    assert "MSH-12" in summary.problems[0].message
    assert "2.5.1" in summary.problems[0].message  # the supported versions are listed


def test_version_with_components_accepted():
    # ANS PAM France sends MSH-12 2.5^FRA^2.11: the version is MSH-12.1.
    _, summary = map_files("hl7v2", ANS_ADMISSION)

    assert summary.problems == []


# --- decimals ---


def decimal_oru(tmp_path: Path) -> Path:
    return write(tmp_path, "decimals.hl7", oru([
        "OBX|1|NM|2345-7^Glucose^LN||1.50|g/L^g/L^UCUM",
        "OBX|2|NM|94076-7^Mutations/Megabase^LN||12.30|1/1000000{Base}^mutations/Mb^UCUM",
        "OBX|3|CWE|48018-6^Gene studied^LN|1|HGNC:3236^EGFR^HGNC",
        "OBX|4|NM|81258-6^Sample variant allelic frequency^LN|1|0.0660",
        "OBX|5|CWE|69548-6^Genetic variant assessment^LN|1|LA9633-4^Present^LN",
    ]))


def test_decimals_kept_as_sent(tmp_path):
    resources, summary = map_files("hl7v2", decimal_oru(tmp_path))

    assert summary.problems == []
    by_code = {o["code"]["coding"][0]["code"]: o for o in of_type(resources, "Observation")}
    glucose = by_code["2345-7"]["valueQuantity"]["value"]
    frequency = component(by_code["69548-6"], "81258-6")["valueQuantity"]["value"]
    assert (glucose.text, by_code["94076-7"]["valueQuantity"]["value"].text, frequency.text) == ("1.50", "12.30", "0.0660")
    written = to_json(transaction_bundle(resources))
    assert '"value": 1.50' in written
    assert '"value": 12.30' in written
    assert '"value": 0.0660' in written
    assert json.loads(written)["entry"]  # valid JSON


@pytest.mark.server
def test_decimals_stored_as_sent(tmp_path, cohort_env):
    settings = load_settings()
    engine = build_engine(settings, read_only=False)
    mapped, summary = map_source("hl7v2", [decimal_oru(tmp_path)], settings, engine)
    load_records(mapped, FhirServer(cohort_env), summary)

    assert summary.problems == []
    observation = next(r for r in mapped[0].resources if r["resourceType"] == "Observation"
                       and r["code"]["coding"][0]["code"] == "2345-7")
    stored = requests.get(f"{cohort_env}/Observation/{observation['id']}", timeout=30,
                          headers={"Accept": "application/fhir+json"})
    assert '"value": 1.50' in stored.text.replace('"value":1.50', '"value": 1.50')
