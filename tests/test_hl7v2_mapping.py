"""HL7 v2 files to FHIR, without a server: values asserted against the messages themselves."""

from pathlib import Path

import pytest

from sonco_fhir.canonical import PSEUDONYM_SYSTEM, profile_url
from helpers import as_text, component, map_files, of_type
from conftest import CASES, REPOSITORY

ANS = CASES / "hl7v2-ansforge-pamfr-cisis"
MICROSOFT = CASES / "hl7v2-microsoft-fhir-converter"
GENOMIC_ORU = REPOSITORY / "examples" / "hl7v2" / "ORU_R01_genomic_NB6TK328.hl7"


def test_ans_admission_patient():
    resources, summary = map_files("hl7v2", ANS / "SGL_admission_ADT_A01.er7")

    assert summary.problems == []
    patient = of_type(resources, "Patient")[0]
    assert patient["gender"] == "female"  # PID-8 F
    assert patient["birthDate"] == "1979"  # PID-7 19790328, year only
    assert patient["identifier"] == [
        {
            "use": "secondary",
            "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "PSEUDED"}]},
            "system": PSEUDONYM_SYSTEM,
            "value": patient["id"],
        }
    ]
    assert patient["meta"]["profile"] == [profile_url("sonco-patient")]


def test_ans_admission_drops_identity():
    resources, _ = map_files("hl7v2", ANS / "SGL_admission_ADT_A01.er7")
    text = as_text(resources)

    for value in ("279035121518989", "000003", "PAT-TROIS", "DOMINIQUE", "19790328", "1979-03-28", "Breteuil", "75007"):
        assert value not in text


def test_ans_admission_encounter():
    resources, _ = map_files("hl7v2", ANS / "SGL_admission_ADT_A01.er7")
    encounter = of_type(resources, "Encounter")[0]

    assert encounter["class"]["code"] == "IMP"  # PV1-2 I
    assert encounter["status"] == "in-progress"  # A01
    # ZBE-2 20240306110000, Paris winter time.
    assert encounter["period"]["start"] == "2024-03-06T11:00:00+01:00"
    assert encounter["subject"]["reference"] == f"Patient/{of_type(resources, 'Patient')[0]['id']}"


def test_ans_discharge_finishes_encounter():
    resources, summary = map_files("hl7v2", ANS / "SGL_sortie_ADT_A03.er7")

    assert summary.problems == []
    assert of_type(resources, "Encounter")[0]["status"] == "finished"


def test_same_patient_across_messages():
    resources, _ = map_files("hl7v2", ANS / "SGL_admission_ADT_A01.er7", ANS / "SGL_sortie_ADT_A03.er7", GENOMIC_ORU)

    assert len(of_type(resources, "Patient")) == 1


@pytest.mark.parametrize("name", ["ADT-A01-01.hl7", "ADT-A04-01.hl7", "ADT-A08-01.hl7", "ADT-A28-01.hl7", "ADT-A31-01.hl7"])
def test_microsoft_adt_patient(name):
    resources, summary = map_files("hl7v2", MICROSOFT / name)

    assert summary.problems == []
    patient = of_type(resources, "Patient")[0]
    assert patient["gender"] == "male"  # PID-8 M
    assert patient["birthDate"] == "1988"  # PID-7 198808181126+0215
    assert patient["deceasedDateTime"] == "2008-08-25T11:16:30+01:15"  # PID-29 with its own offset
    text = as_text(resources)
    for value in ("PATID1234", "EVERYMAN", "ADAM", "Aniston", "19880818"):
        assert value not in text


def test_genomic_variant_components():
    resources, summary = map_files("hl7v2", GENOMIC_ORU)

    assert summary.problems == []
    variants = [o for o in of_type(resources, "Observation") if o["code"]["coding"][0]["code"] == "69548-6"]
    assert len(variants) == 5  # five OBX-4 groups carry a 69548-6
    first = variants[0]
    assert first["valueCodeableConcept"]["coding"][0] == {"system": "http://loinc.org", "code": "LA9633-4", "display": "Present"}
    gene = component(first, "48018-6")["valueCodeableConcept"]["coding"][0]
    assert gene == {"system": "http://www.genenames.org", "code": "HGNC:583", "display": "APC"}
    assert component(first, "48004-6")["valueCodeableConcept"]["text"] == "NM_001127510.3:c.5465T>A"
    assert component(first, "48005-3")["valueCodeableConcept"]["text"] == "p.Val1822Asp"
    assert component(first, "69547-8")["valueString"] == "T"
    assert component(first, "69551-0")["valueString"] == "A"
    assert component(first, "81254-5")["valueRange"]["low"]["value"] == 112841059
    source_class = component(first, "48002-0")["valueCodeableConcept"]["coding"][0]["code"]
    assert source_class == "LA6683-2"  # Germline
    assert first["meta"]["profile"] == [profile_url("sonco-observation-variant")]


def test_genomic_report_links_results():
    resources, _ = map_files("hl7v2", GENOMIC_ORU)
    report = of_type(resources, "DiagnosticReport")[0]
    ids = {f"Observation/{o['id']}" for o in of_type(resources, "Observation")}

    assert report["code"]["coding"][0]["code"] == "51969-4"
    assert report["category"][0]["coding"][0]["code"] == "GE"
    assert report["issued"] == "2024-04-15T09:30:00+02:00"  # OBR-22, Paris summer time
    assert {r["reference"] for r in report["result"]} == ids
    # 106 OBX: 5 variant groups of 16 OBX become 5 Observations; the 25 region-studied
    # OBX and the overall interpretation become one Observation each.
    assert len(ids) == 5 + 25 + 1


def test_unparseable_message_reports_place(tmp_path):
    bad = tmp_path / "bad.hl7"
    good = (ANS / "SGL_admission_ADT_A01.er7").read_text(encoding="utf-8")
    bad.write_text("PID|1||123\n" + good, encoding="utf-8")

    resources, summary = map_files("hl7v2", bad)

    assert len(summary.problems) == 1
    assert "ligne 1" in summary.problems[0].location
    assert "MSH" in summary.problems[0].message
    assert len(of_type(resources, "Patient")) == 1  # the message after the bad one still maps


def test_bad_date_names_template_place(tmp_path):
    text = (ANS / "SGL_admission_ADT_A01.er7").read_text(encoding="utf-8").replace("|19790328|F|", "|1979032|F|")
    bad = tmp_path / "bad-date.hl7"
    bad.write_text(text, encoding="utf-8")

    _, summary = map_files("hl7v2", bad)

    assert summary.records_rejected == 0  # year() reads the year of a truncated date

    text = text.replace("|20240306111154||ADT", "|2024030611115X||ADT")
    bad.write_text(text, encoding="utf-8")
    _, summary = map_files("hl7v2", bad)
    assert summary.records_rejected == 1
    assert "2024030611115X" not in summary.problems[0].message  # a date may be a birth date
    assert "'9999999999999A'" in summary.problems[0].message
    assert "provenance" in summary.problems[0].message


def test_unsupported_message_type_is_set_aside(tmp_path):
    siu = tmp_path / "SIU-S12.hl7"
    siu.write_text((ANS / "SGL_admission_ADT_A01.er7").read_text(encoding="utf-8").replace("ADT^A01^ADT_A01", "SIU^S12^SIU_S12"),
                   encoding="utf-8")

    _, summary = map_files("hl7v2", siu)

    assert summary.records_rejected == 1
    assert "message_type=SIU, trigger_event=S12" in summary.problems[0].message


def test_problem_in_both_languages():
    from sonco_fhir import i18n

    _, summary = map_files("hl7v2", MICROSOFT / "ORU-R01-RMGEAD.hl7")
    assert "aucun identifiant patient utilisable" in summary.problems[0].message

    i18n.set_language("en")
    _, summary = map_files("hl7v2", MICROSOFT / "ORU-R01-RMGEAD.hl7")
    assert "no usable patient identifier" in summary.problems[0].message


def test_cli_language_from_environment(monkeypatch):
    from typer.testing import CliRunner

    from sonco_fhir import i18n
    from sonco_fhir.cli.main import build_app

    monkeypatch.setenv("SONCO_LANG", "en")
    i18n.set_language(i18n.detect_language([]))
    result = CliRunner().invoke(build_app(), ["map", "hl7v2", str(ANS / "SGL_admission_ADT_A01.er7")])

    assert result.exit_code == 0
    assert "record(s) read, 1 mapped" in result.stderr


def test_cli_bad_input_exit_code(tmp_path):
    from typer.testing import CliRunner

    from sonco_fhir.cli.main import build_app

    bad = tmp_path / "garbage.hl7"
    bad.write_text("this is not HL7\n", encoding="utf-8")
    result = CliRunner().invoke(build_app(), ["map", "hl7v2", str(bad), str(ANS / "SGL_admission_ADT_A01.er7")])

    assert result.exit_code == 1
    assert f"{bad}: ligne 1 (message 1)" in result.stderr
    assert "2 enregistrement(s) lus, 1 transformé(s), 1 mis de côté" in result.stderr
    assert '"resourceType": "Patient"' in result.stdout  # the good file still maps


def test_cli_nothing_readable_exit_code(tmp_path):
    from typer.testing import CliRunner

    from sonco_fhir.cli.main import build_app

    bad = tmp_path / "garbage.hl7"
    bad.write_text("this is not HL7\n", encoding="utf-8")
    result = CliRunner().invoke(build_app(), ["map", "hl7v2", str(bad)])

    assert result.exit_code == 6


def test_cli_missing_file_exit_code():
    from typer.testing import CliRunner

    from sonco_fhir.cli.main import build_app

    result = CliRunner().invoke(build_app(), ["map", "hl7v2", "/nonexistent/file.hl7"])

    assert result.exit_code == 6
    assert "/nonexistent/file.hl7" in result.stderr


def test_cli_unknown_kind_exit_code():
    from typer.testing import CliRunner

    from sonco_fhir.cli.main import build_app

    result = CliRunner().invoke(build_app(), ["ingest", "bogus", "examples"])

    assert result.exit_code == 2
    assert "bogus" in result.stderr
