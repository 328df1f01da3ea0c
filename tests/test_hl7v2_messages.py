"""HL7 v2 message types beyond admissions and results: movements, cancellations, merges, documents, orders.

Values are asserted against the messages themselves, without a server.
"""

import base64
import hashlib
from pathlib import Path

import pytest

from sonco_fhir.canonical import profile_url
from sonco_fhir.connectors.hl7v2 import MessageError, message_record
from sonco_fhir.pipeline import build_engine
from sonco_fhir.config import load_settings
from helpers import as_text, map_files, of_type
from conftest import CASES, REPOSITORY

ANS = CASES / "hl7v2-ansforge-pamfr-cisis"
MICROSOFT = CASES / "hl7v2-microsoft-fhir-converter"
DATA = REPOSITORY / "tests" / "data" / "hl7v2"
MOVEMENTS = DATA / "PAMFR-movements-A01-A02-A12-A06.hl7"
DISCHARGE = DATA / "PAMFR-discharge-A03-A13.hl7"


def messages_of(path: Path) -> list[str]:
    """Split a test file into its messages, each written to be mapped on its own."""
    text = path.read_text(encoding="utf-8")
    return ["MSH" + part for part in text.split("MSH")[1:]]


def write_message(tmp_path: Path, path: Path, index: int) -> Path:
    target = tmp_path / f"{path.stem}-{index}.hl7"
    target.write_text(messages_of(path)[index], encoding="utf-8")
    return target


def encounters(resources: list[dict]) -> tuple[list[dict], list[dict]]:
    """Split Encounters into visits and movements (a movement is partOf its visit)."""
    found = of_type(resources, "Encounter")
    return [e for e in found if "partOf" not in e], [e for e in found if "partOf" in e]


def resource_id(resource_type: str, *key: str) -> str:
    engine = build_engine(load_settings(), read_only=True)
    return engine.pseudonymiser.resource_id(resource_type, *key)


# --- IHE PAM France movements (ZBE) and cancellations ---


def test_admission_movement_part_of_visit(tmp_path):
    resources, summary = map_files("hl7v2", write_message(tmp_path, MOVEMENTS, 0))

    assert summary.problems == []
    (visit,), (movement,) = encounters(resources)
    assert movement["partOf"] == {"reference": f"Encounter/{visit['id']}"}
    # The movement's key is MSH-4, PV1-19 and ZBE-1 (101).
    assert movement["id"] == resource_id("Encounter", "movement", "CHU-X", "000897406", "101")
    assert movement["status"] == "in-progress"  # ZBE-4 INSERT
    assert movement["period"]["start"] == "2024-03-06T11:00:00+01:00"  # ZBE-2
    assert visit["period"]["start"] == "2024-03-06T11:00:00+01:00"  # A01 without PV1-44: ZBE-2
    assert movement["meta"]["profile"] == [profile_url("sonco-encounter")]


def test_transfer_keeps_visit_in_progress(tmp_path):
    resources, summary = map_files("hl7v2", write_message(tmp_path, MOVEMENTS, 1))

    assert summary.problems == []
    (visit,), (movement,) = encounters(resources)
    assert visit["status"] == "in-progress"  # A02
    assert "period" not in visit  # a transfer's ZBE-2 is not the visit's start
    assert movement["id"] == resource_id("Encounter", "movement", "CHU-X", "000897406", "102")
    assert movement["period"]["start"] == "2024-03-07T08:30:00+01:00"


def test_cancel_transfer_marks_movement_in_error():
    resources, summary = map_files("hl7v2", MOVEMENTS)

    assert summary.problems == []
    _, movements = encounters(resources)
    by_id = {movement["id"]: movement for movement in movements}
    cancelled = by_id[resource_id("Encounter", "movement", "CHU-X", "000897406", "102")]
    assert cancelled["status"] == "entered-in-error"  # A12 with ZBE-4 CANCEL on movement 102
    assert by_id[resource_id("Encounter", "movement", "CHU-X", "000897406", "101")]["status"] == "in-progress"


def test_class_change_updates_visit_class():
    resources, _ = map_files("hl7v2", MOVEMENTS)
    (visit,), _ = encounters(resources)

    # The last message is an A06 with PV1-2 O: the visit is now ambulatory, and still in progress.
    assert visit["class"]["code"] == "AMB"
    assert visit["status"] == "in-progress"


def test_discharge_ends_visit(tmp_path):
    resources, _ = map_files("hl7v2", write_message(tmp_path, DISCHARGE, 0))
    (visit,), (movement,) = encounters(resources)

    assert visit["status"] == "finished"
    assert visit["period"] == {"start": "2024-03-06T11:00:00+01:00", "end": "2024-03-10T11:30:00+01:00"}  # PV1-44, PV1-45
    assert movement["status"] == "finished"


def test_cancel_discharge_reopens_visit():
    resources, summary = map_files("hl7v2", DISCHARGE)

    assert summary.problems == []
    (visit,), (movement,) = encounters(resources)
    assert visit["status"] == "in-progress"  # A13
    assert visit["period"] == {"start": "2024-03-06T11:00:00+01:00"}  # the end is removed
    assert movement["id"] == resource_id("Encounter", "movement", "CHU-X", "000897406", "104")
    assert movement["status"] == "entered-in-error"


def test_cancel_admission_marks_visit_in_error():
    resources, summary = map_files("hl7v2", DATA / "PAMFR-cancel-admission-A11.hl7")

    assert summary.problems == []
    (visit,), (movement,) = encounters(resources)
    assert visit["status"] == "entered-in-error"
    assert visit["id"] == resource_id("Encounter", "encounter", "CHU-X", "000897406")
    assert movement["id"] == resource_id("Encounter", "movement", "CHU-X", "000897406", "101")
    assert movement["status"] == "entered-in-error"


def test_identity_reliability_dropped():
    resources, _ = map_files("hl7v2", ANS / "SGL_admission_ADT_A01.er7")
    patient = of_type(resources, "Patient")[0]

    # PID-32 VALI and ZFD are read by no mapping: the cohort Patient has no identity to qualify.
    assert "VALI" not in as_text(resources)
    assert "extension" not in patient
    assert patient["deceasedBoolean"] is False  # PID-30 N


# --- A40 merge and A47 identifier change ---


def test_merge_of_unknown_identifier_links_it():
    resources, summary = map_files("hl7v2", MICROSOFT / "ADT-A40-01.hl7")

    assert summary.problems == []
    (patient,) = of_type(resources, "Patient")
    assert "link" not in patient  # MRG-1 56789 named no cohort patient: it now names this one
    assert "56789" not in as_text(resources)


def test_merge_links_two_patients():
    merged_first = DATA / "ADT-A28-merged-patient.hl7"
    before, _ = map_files("hl7v2", merged_first)
    merged_id = of_type(before, "Patient")[0]["id"]

    resources, summary = map_files("hl7v2", merged_first, MICROSOFT / "ADT-A40-01.hl7")

    assert summary.problems == []
    patients = {patient["id"]: patient for patient in of_type(resources, "Patient")}
    assert len(patients) == 2
    merged = patients.pop(merged_id)
    (surviving,) = patients.values()
    assert surviving["link"] == [{"other": {"reference": f"Patient/{merged_id}"}, "type": "replaces"}]
    assert surviving["active"] is True
    assert surviving["gender"] == "female"  # PID-8 F of the A40
    assert merged["active"] is False
    assert merged["link"] == [{"other": {"reference": f"Patient/{surviving['id']}"}, "type": "replaced-by"}]
    assert merged["identifier"][0]["value"] == merged_id
    assert merged["birthDate"] == "2018"  # kept from the A28 by the patient merge


def test_merge_with_two_pairs_gives_two_records():
    resources, summary = map_files("hl7v2", MICROSOFT / "ADT-A40-02.hl7")

    assert summary.problems == []
    assert summary.records_read == 2  # one record per PID/MRG pair
    assert len(of_type(resources, "Patient")) == 2  # PID-3 12345 and 145 are two surviving patients
    for value in ("12345", "56789", "569"):
        assert f'"{value}"' not in as_text(resources)


def test_single_record_rejects_two_pairs():
    text = (MICROSOFT / "ADT-A40-02.hl7").read_text(encoding="utf-8").replace("\n", "\r")

    # One record per message (the MLLP path) would lose the second merge: the message is rejected instead.
    with pytest.raises(MessageError) as error:
        message_record("mllp", 1, text, 1)
    assert "2 paires PID/MRG" in str(error.value)
    assert error.value.fix


def test_identifier_change_keeps_patient(tmp_path):
    only_new = tmp_path / "new-ipp.hl7"
    only_new.write_text(messages_of(DATA / "PAMFR-identifier-change-A47.hl7")[0]
                        .replace("ADT^A47^ADT_A30", "ADT^A31^ADT_A05").replace("\nMRG|000003^^^CHU-X&000897406&N^PI", ""),
                        encoding="utf-8")

    resources, summary = map_files("hl7v2", ANS / "SGL_admission_ADT_A01.er7", DATA / "PAMFR-identifier-change-A47.hl7", only_new)

    assert summary.problems == []
    # The A47 links the new IPP 000042 to the patient of IPP 000003, so the A31 with only 000042 finds it.
    assert len(of_type(resources, "Patient")) == 1


# --- documents ---


def ed_data(path: Path, set_id: str) -> bytes:
    """Decode OBX-5.5 of the OBX with this set ID, as the test reads it from the file."""
    for line in path.read_text(encoding="utf-8").splitlines():
        fields = line.split("|")
        if fields[0] == "OBX" and fields[1] == set_id:
            data = fields[5].split("^")[4]
            return base64.b64decode(data + "=" * (-len(data) % 4))
    raise AssertionError(f"no OBX {set_id} in {path.name}")


def sha1_base64(content: bytes) -> str:
    return base64.b64encode(hashlib.sha1(content).digest()).decode("ascii")


def test_mdm_document_reference():
    path = ANS / "CISIS_V2.1_MDM_T02_CR_Radio_INIT_N1.er7"
    resources, summary = map_files("hl7v2", path)

    assert summary.problems == []
    (document,) = of_type(resources, "DocumentReference")  # OBX 12, the e-mail body, is no document
    assert document["type"]["coding"] == [{"system": "http://loinc.org", "code": "18748-4", "display": "CR d'imagerie médicale"}]
    assert document["status"] == "current"
    assert document["docStatus"] == "final"  # TXA-17 AU
    assert document["date"] == "2022-12-16T09:32:00+01:00"  # TXA-4
    content = ed_data(path, "1")
    assert document["content"] == [{"attachment": {
        "contentType": "text/xml", "title": "CR d'imagerie médicale", "size": len(content), "hash": sha1_base64(content)}}]
    assert document["subject"]["reference"] == f"Patient/{of_type(resources, 'Patient')[0]['id']}"
    assert document["meta"]["profile"] == [profile_url("sonco-documentreference")]


def test_long_mdm_document_not_copied():
    path = ANS / "CISIS_V2.1_MDM_T02_CR_Radio_INIT_N1_Base64_long.er7"
    resources, summary = map_files("hl7v2", path)

    assert summary.problems == []
    (document,) = of_type(resources, "DocumentReference")
    content = ed_data(path, "1")
    assert len(content) > 200_000
    assert document["content"][0]["attachment"]["size"] == len(content)
    assert document["content"][0]["attachment"]["hash"] == sha1_base64(content)
    assert base64.b64encode(content[:300]).decode("ascii") not in as_text(resources)
    # The same document number (TXA-12) as the short message: the long one updates the same resource.
    short, _ = map_files("hl7v2", ANS / "CISIS_V2.1_MDM_T02_CR_Radio_INIT_N1.er7")
    assert of_type(short, "DocumentReference")[0]["id"] == document["id"]


def test_oru_documents_linked_to_report():
    path = ANS / "CISIS_V2.1_ORU_R01_CR_Bio_INIT_N1_N3.hl7"
    resources, summary = map_files("hl7v2", path)

    assert summary.problems == []
    (report,) = of_type(resources, "DiagnosticReport")
    documents = of_type(resources, "DocumentReference")
    assert len(documents) == 2  # OBX 1 and 2 are ED reports; OBX 13 is the e-mail body
    for document in documents:
        assert document["context"]["related"] == [{"reference": f"DiagnosticReport/{report['id']}"}]
        assert document["type"]["coding"][0]["code"] == "11502-2"
        assert document["content"][0]["attachment"]["hash"] == sha1_base64(ed_data(path, "1"))
    assert "presentedForm" not in report


def test_document_without_padding():
    path = ANS / "CISIS_V1.2_ORU_R01_message.hl7"
    resources, summary = map_files("hl7v2", path)

    assert summary.problems == []
    (document,) = of_type(resources, "DocumentReference")
    assert document["content"][0]["attachment"]["size"] == len(ed_data(path, "1")) == 31
    assert document["type"]["coding"] == [{"code": "11502-2", "display": "CR d'examens biologiques"}]  # OBX-3 without a system


def test_untyped_empty_document_skipped():
    resources, summary = map_files("hl7v2", MICROSOFT / "ORU-R01-01.hl7")

    # OBX||ED|||App5^NS^Octet-stream^Base64| before any OBR: no type and no data.
    assert summary.problems == []
    assert of_type(resources, "DocumentReference") == []


def test_invalid_base64_document_set_aside(tmp_path):
    text = (ANS / "CISIS_V2.1_MDM_T02_CR_Radio_INIT_N1.er7").read_text(encoding="utf-8")
    bad = tmp_path / "bad-base64.hl7"
    bad.write_text(text.replace("Base64^RG9jdW1l", "Base64^RG9j*W1l"), encoding="utf-8")

    _, summary = map_files("hl7v2", bad)

    assert summary.records_rejected == 1
    assert "OBX de la ligne 8" in summary.problems[0].message
    assert "Base64" in summary.problems[0].message


# --- orders ---


def test_oml_order():
    resources, summary = map_files("hl7v2", MICROSOFT / "OML-O21-01.hl7")

    assert summary.problems == []
    (order,) = of_type(resources, "ServiceRequest")
    assert order["status"] == "active"  # ORC-1 NW
    assert order["intent"] == "order"
    assert order["code"]["coding"] == [{"system": "http://loinc.org", "code": "57698-3",
                                        "display": "Lipid panel with direct LDL - Serum or Plasma"}]
    assert order["authoredOn"] == "2021-10-20T11:26:00+02:15"  # ORC-9
    assert order["occurrenceDateTime"] == "2021-10-20T12:00:00+02:15"  # OBR-6
    assert "identifier" not in order
    assert order["meta"]["profile"] == [profile_url("sonco-servicerequest-order")]
    # ORC-2 placer number 1101 of GHHSFacility keys the request.
    assert order["id"] == resource_id("ServiceRequest", "order", "GHHSFacility", "1101")
    for value in ("PATID1234", "EVERYMAN", "19880818", "1101"):
        assert value not in as_text(resources)


def test_orm_order():
    resources, summary = map_files("hl7v2", MICROSOFT / "ORM-O01-01.hl7")

    assert summary.problems == []
    (order,) = of_type(resources, "ServiceRequest")
    assert order["code"]["coding"][0] == {"system": "http://loinc.org", "code": "24725-4", "display": "CT Head"}
    assert order["authoredOn"] == "2021-10-20T11:26:00+02:15"
    assert "occurrenceDateTime" not in order  # OBR-6 empty


def test_cancelled_order_revoked(tmp_path):
    cancelled = tmp_path / "ORM-cancel.hl7"
    cancelled.write_text((MICROSOFT / "ORM-O01-01.hl7").read_text(encoding="utf-8-sig").replace("ORC|NW|", "ORC|CA|"),
                         encoding="utf-8")

    resources, _ = map_files("hl7v2", cancelled)

    assert of_type(resources, "ServiceRequest")[0]["status"] == "revoked"


def test_acknowledgement_set_aside():
    _, summary = map_files("hl7v2", ANS / "CISIS_V2.1_MDM_ACK.er7")

    assert summary.records_rejected == 1
    assert "message_type=ACK, trigger_event=T10" in summary.problems[0].message
