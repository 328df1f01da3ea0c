"""Every real HL7 v2 sample: mapped, with values taken from the message, or set aside with a clear reason."""

import pytest

from helpers import map_files, of_type
from conftest import CASES

FOLDERS = ("hl7v2-ansforge-pamfr-cisis", "hl7v2-microsoft-fhir-converter", "hl7v2-linuxforhealth-converter",
           "hl7v2-vcf2hl7v2-genomic-obx")
NO_MSH = "ne commence pas par un segment MSH"
NO_IDENTIFIER = "aucun identifiant patient utilisable"

# Sample -> None when every message maps, else a text of the problem each message gets.
OUTCOMES = {
    "hl7v2-ansforge-pamfr-cisis/CISIS_V1.2_ORU_R01_message.hl7": None,
    "hl7v2-ansforge-pamfr-cisis/CISIS_V2.1_MDM_ACK.er7": "message_type=ACK, trigger_event=T10",  # an acknowledgement
    "hl7v2-ansforge-pamfr-cisis/CISIS_V2.1_MDM_T02_CR_Radio_INIT_N1.er7": None,
    "hl7v2-ansforge-pamfr-cisis/CISIS_V2.1_MDM_T02_CR_Radio_INIT_N1_Base64_long.er7": None,
    "hl7v2-ansforge-pamfr-cisis/CISIS_V2.1_ORU_R01_CR_Bio_INIT_N1_N3.hl7": None,
    "hl7v2-ansforge-pamfr-cisis/Consentement_ADT_A01_ConsentementConsultation_NonOppositionAlimentation.er7": None,
    "hl7v2-ansforge-pamfr-cisis/SGL_admission_ADT_A01.er7": None,
    "hl7v2-ansforge-pamfr-cisis/SGL_sortie_ADT_A03.er7": None,
    # PID-3 0d70c6c8^^^MRN has no identifier type (CX-5): no IPP.
    "hl7v2-linuxforhealth-converter/ORU-multiline-short-mixed.hl7": NO_IDENTIFIER,
    "hl7v2-linuxforhealth-converter/ORU-multiline-short.hl7": NO_IDENTIFIER,
    "hl7v2-linuxforhealth-converter/sample_unix.hl7": None,
    "hl7v2-microsoft-fhir-converter/ADT-A01-01.hl7": None,
    "hl7v2-microsoft-fhir-converter/ADT-A04-01.hl7": None,
    "hl7v2-microsoft-fhir-converter/ADT-A08-01.hl7": None,
    "hl7v2-microsoft-fhir-converter/ADT-A28-01.hl7": None,
    "hl7v2-microsoft-fhir-converter/ADT-A31-01.hl7": None,
    "hl7v2-microsoft-fhir-converter/ADT-A40-01.hl7": None,
    "hl7v2-microsoft-fhir-converter/ADT-A40-02.hl7": None,
    "hl7v2-microsoft-fhir-converter/ADT04-251.hl7": None,
    "hl7v2-microsoft-fhir-converter/LAB-ORU-1.hl7": None,
    # PID-3 987654321 has no identifier type and no authority.
    "hl7v2-microsoft-fhir-converter/MDM-T02-01.hl7": NO_IDENTIFIER,
    "hl7v2-microsoft-fhir-converter/MDM_01.hl7": None,  # MSH-9 is ADT^A01: mapped as an admission
    "hl7v2-microsoft-fhir-converter/OML-O21-01.hl7": None,
    "hl7v2-microsoft-fhir-converter/ORM-O01-01.hl7": None,
    "hl7v2-microsoft-fhir-converter/ORU-R01-01.hl7": None,
    # PID-3 is a bare social security number, with no type.
    "hl7v2-microsoft-fhir-converter/ORU-R01-RMGEAD.hl7": NO_IDENTIFIER,
    # VCF, BED and annotation inputs of a converter, and its OBX-only output: no MSH.
    "hl7v2-vcf2hl7v2-genomic-obx/NB6TK328_annotations.txt": NO_MSH,
    "hl7v2-vcf2hl7v2-genomic-obx/NB6TK328_conversion_region.bed": NO_MSH,
    "hl7v2-vcf2hl7v2-genomic-obx/NB6TK328_filtered.vcf": NO_MSH,
    "hl7v2-vcf2hl7v2-genomic-obx/NB6TK328_region_studied.bed": NO_MSH,
    "hl7v2-vcf2hl7v2-genomic-obx/expected_NB6TK328.txt": NO_MSH,
}


def test_outcome_for_every_sample():
    samples = {f"{path.parent.name}/{path.name}" for folder in FOLDERS for path in (CASES / folder).iterdir()}

    assert samples == set(OUTCOMES)


@pytest.mark.parametrize("name", sorted(OUTCOMES))
def test_sample_mapped_or_set_aside(name):
    resources, summary = map_files("hl7v2", CASES / name)
    expected = OUTCOMES[name]

    if expected is None:
        assert summary.problems == []
        assert summary.records_mapped == summary.records_read >= 1
        assert of_type(resources, "Provenance")
    else:
        assert summary.records_mapped == 0
        assert summary.problems
        for problem in summary.problems:
            assert expected in problem.message
            assert problem.fix  # every problem gives a fix


def test_linuxforhealth_admission():
    resources, _ = map_files("hl7v2", CASES / "hl7v2-linuxforhealth-converter" / "sample_unix.hl7")
    patient = of_type(resources, "Patient")[0]
    (encounter,) = of_type(resources, "Encounter")

    assert patient["gender"] == "female"  # PID-8 F
    assert patient["birthDate"] == "1980"  # PID-7 19800202
    assert encounter["class"] == {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"}  # PV1-2 ff: unknown
    assert encounter["period"] == {"start": "2014-09-12T22:00:00+02:00"}  # PV1-44 201409122200, Paris summer time
    assert encounter["status"] == "in-progress"


def test_minimal_v23_admission_without_visit():
    resources, summary = map_files("hl7v2", CASES / "hl7v2-microsoft-fhir-converter" / "ADT04-251.hl7")

    assert summary.problems == []
    patient = of_type(resources, "Patient")[0]
    assert (patient["gender"], patient["birthDate"]) == ("female", "1978")  # PID-8 F, PID-7 19780101
    assert of_type(resources, "Encounter") == []  # PV1-19 is empty


def test_document_style_admission():
    resources, _ = map_files("hl7v2", CASES / "hl7v2-microsoft-fhir-converter" / "MDM_01.hl7")
    (encounter,) = of_type(resources, "Encounter")

    assert encounter["class"]["code"] == "PRENC"  # PV1-2 P
    assert encounter["period"]["start"] == "2015-02-08T11:34:19+01:10"  # PV1-44 with its own offset
    assert of_type(resources, "DocumentReference") == []  # MSH-9 ADT^A01: TXA and OBR are not read


def test_consent_admission_uses_admit_time():
    name = "Consentement_ADT_A01_ConsentementConsultation_NonOppositionAlimentation.er7"
    resources, _ = map_files("hl7v2", CASES / "hl7v2-ansforge-pamfr-cisis" / name)
    visits = [e for e in of_type(resources, "Encounter") if "partOf" not in e]
    movements = [e for e in of_type(resources, "Encounter") if "partOf" in e]

    assert visits[0]["period"] == {"start": "2024-03-06T11:00:00+01:00"}  # PV1-44 20240306110000
    assert visits[0]["class"]["code"] == "IMP"  # PV1-2 I
    assert movements[0]["status"] == "in-progress"  # ZBE 312, INSERT


def test_two_reports_in_one_result():
    resources, _ = map_files("hl7v2", CASES / "hl7v2-microsoft-fhir-converter" / "LAB-ORU-1.hl7")
    reports = {r["code"]["coding"][0]["code"]: r for r in of_type(resources, "DiagnosticReport")}
    observations = {o["code"]["coding"][0]["code"]: o for o in of_type(resources, "Observation")}

    assert set(reports) == {"24317-0", "26464-8"}  # OBR-4 of the two orders
    assert len(reports["24317-0"]["result"]) == 5
    assert len(reports["26464-8"]["result"]) == 5
    assert observations["11156-7"]["status"] == "registered"  # OBX-11 I, empty
    assert "valueQuantity" not in observations["11156-7"]
    assert observations["11273-0"]["valueQuantity"] == {"value": 4.06, "unit": "tera.l-1"}
    assert observations["11273-0"]["valueQuantity"]["value"].text == "4.06"
    assert observations["11125-2"]["status"] == "final"  # OBX-11 F
    assert observations["11125-2"]["effectiveDateTime"] == "2014-10-06T08:30:00+07:00"


def test_repeated_set_id_keeps_both_observations():
    resources, summary = map_files("hl7v2", CASES / "hl7v2-microsoft-fhir-converter" / "ORU-R01-01.hl7")

    assert summary.problems == []
    observations = {o["code"]["coding"][0]["code"]: o for o in of_type(resources, "Observation")}
    # Two OBX share set ID 1 in the order: both are kept, with the NM OBX of set ID 2.
    assert set(observations) == {"625-4", "1063-7", "8867-4"}
    assert observations["625-4"]["valueCodeableConcept"]["coding"][0] == {
        "system": "http://snomed.info/sct", "code": "27268008", "display": "Salmonella"}
    assert observations["625-4"]["status"] == "preliminary"  # OBX-11 P
    assert observations["1063-7"]["valueString"] == "https://testurl.com"
    (report,) = of_type(resources, "DiagnosticReport")
    assert report["effectiveDateTime"] == "2002-02-15T07:30:00+02:15"  # OBR-7
    assert len(report["result"]) == 3
