"""Generate a synthetic SONCO cohort: every patient goes through the pathway, with the resources the SONCO profiles define.

The resources copy the shape of the profile examples (`sonco_fhir/profiles/examples/`)
with generated ids, dates and codes, so they conform to the same profiles.
Dates are spread over 2024; a fixed seed makes the cohort reproducible.
"""

import argparse
import json
import random
from datetime import date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

BASE = "https://sonco.example/fhir"
MILESTONE = f"{BASE}/CodeSystem/sonco-pathway-milestone"
RECOMMENDATION = f"{BASE}/CodeSystem/sonco-rcp-recommendation"
LOINC = "http://loinc.org"
PARIS = ZoneInfo("Europe/Paris")

LABS = {"SeqOIA": ("lab-seqoia", "spice-request"), "AURAGEN": ("lab-auragen", "hygen-request")}
# Pre-indication code and the CIM-10 code of its condition (None: no condition recorded).
PREINDICATIONS = [("pancreatic-cancer", "C25.9"), ("cholangiocarcinoma", "C22.1"), ("cancer-unknown-primary", "C80.9"),
                  ("neuroendocrine-neoplasm", None), ("other-cancer", None)]
HOSPITALS = [f"CH{number:02d}" for number in range(1, 9)]
PRIOR_DRUGS = ["gemcitabine", "nab-paclitaxel", "oxaliplatin", "irinotecan", "fluorouracil", "cisplatin"]
TARGETED_DRUGS = ["olaparib", "osimertinib", "larotrectinib", "dabrafenib", "pemigatinib"]
FAILURE_REASONS = ["insufficient-dna", "low-tumour-cellularity", "low-sequencing-quality", "non-compliant-sample"]


def _profile(name: str) -> dict:
    return {"profile": [f"{BASE}/StructureDefinition/{name}"]}


def _instant(day: date, hour: int, minute: int = 0) -> str:
    """Return a Paris wall-clock time on `day`, written with its offset (+01:00 in winter, +02:00 in summer)."""
    return datetime.combine(day, time(hour, minute), PARIS).isoformat()


def _reference(resource_type: str, resource_id: str) -> dict:
    return {"reference": f"{resource_type}/{resource_id}"}


def shared_resources() -> list[dict]:
    """Return the two labs and the clinical study, referenced by every patient."""
    organizations = [{"resourceType": "Organization", "id": resource_id, "meta": _profile("sonco-organization"),
                      "name": f"LBM-FMG {name}", "alias": [name]} for name, (resource_id, _) in LABS.items()]
    study = {"resourceType": "ResearchStudy", "id": "bench-study", "status": "active", "title": "Synthetic trial"}
    return organizations + [study]


def _request_resources(key: str, rng: random.Random) -> tuple[list[dict], dict]:
    """Return the patient, the prescription, the diagnosis and the earlier treatments, and the context of later steps."""
    patient_id = f"pat-{key}"
    subject = _reference("Patient", patient_id)
    lab = "SeqOIA" if rng.random() < 0.55 else "AURAGEN"
    lab_id, request_system = LABS[lab]
    performer = {"reference": f"Organization/{lab_id}", "display": lab}
    preindication, cim10 = rng.choice(PREINDICATIONS)
    prescribed = date(2024, 1, 1) + timedelta(days=rng.randrange(0, 300))
    request_id = f"sr-{key}"
    resources = [
        {"resourceType": "Patient", "id": patient_id, "meta": _profile("sonco-patient"),
         "identifier": [{"use": "secondary", "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "PSEUDED"}]},
                         "system": f"{BASE}/NamingSystem/sonco-pseudonym", "value": patient_id}],
         "gender": rng.choice(["female", "male"]), "birthDate": str(rng.randrange(1940, 2000))},
        {"resourceType": "ServiceRequest", "id": request_id, "meta": _profile("sonco-servicerequest"),
         "identifier": [{"system": f"{BASE}/NamingSystem/{request_system}", "value": f"DEM-{key}"}],
         "status": "completed", "intent": "order",
         "code": {"coding": [{"system": LOINC, "code": "86206-0"}]},
         "reasonCode": [{"coding": [{"system": f"{BASE}/CodeSystem/sonco-pfmg-preindication", "code": preindication}]}],
         "subject": subject, "authoredOn": prescribed.isoformat(), "performer": [performer],
         "requester": {"display": rng.choice(HOSPITALS)}},
    ]
    if cim10:
        resources.append({"resourceType": "Condition", "id": f"cond-{key}", "meta": _profile("sonco-condition"),
                          "code": {"coding": [{"system": "https://smt.esante.gouv.fr/terminologie-cim-10", "code": cim10}]},
                          "subject": subject, "recordedDate": (prescribed - timedelta(days=rng.randrange(20, 200))).isoformat()})
    for index, drug in enumerate(rng.sample(PRIOR_DRUGS, rng.randrange(0, 3))):
        resources.append({"resourceType": "MedicationStatement", "id": f"med-{key}-{index}", "meta": _profile("sonco-medicationstatement"),
                          "status": "completed", "medicationCodeableConcept": {"text": drug}, "subject": subject,
                          "effectivePeriod": {"start": (prescribed - timedelta(days=rng.randrange(30, 400))).isoformat()}})
    context = {"key": key, "subject": subject, "performer": performer, "request": _reference("ServiceRequest", request_id),
               "prescribed": prescribed}
    return resources, context


def _sample_resources(context: dict, rng: random.Random) -> tuple[list[dict], date]:
    """Return the RCP d'amont validation and the samples, and the first reception day."""
    key, subject = context["key"], context["subject"]
    validated = context["prescribed"] + timedelta(days=rng.randrange(0, 15))
    resources = [{"resourceType": "Task", "id": f"amont-{key}", "meta": _profile("sonco-task-rcp-amont"),
                  "status": "completed", "intent": "order",
                  "code": {"coding": [{"system": MILESTONE, "code": "rcp-amont-validation"}]},
                  "businessStatus": {"coding": [{"system": f"{BASE}/CodeSystem/sonco-rcp-decision", "code": "validated"}]},
                  "focus": context["request"], "for": subject, "executionPeriod": {"end": validated.isoformat()}}]
    received = validated + timedelta(days=rng.randrange(1, 21))
    samples = 2 if rng.random() < 0.08 else 1
    for index in range(samples):
        resources.append({"resourceType": "Specimen", "id": f"spec-{key}-{index}", "meta": _profile("sonco-specimen"),
                          "identifier": [{"system": f"{BASE}/NamingSystem/spice-specimen", "value": f"PRL-{key}-{index}"}],
                          "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0487", "code": "TUMOR"}]},
                          "subject": subject, "receivedTime": _instant(received + timedelta(days=14 * index), 9, 12),
                          "request": [context["request"]],
                          "processing": [{"procedure": {"coding": [{"system": f"{BASE}/CodeSystem/sonco-sample-preservation",
                                                                    "code": "ffpe" if rng.random() < 0.3 else "frozen"}]}}]})
    resources.append({"resourceType": "Specimen", "id": f"spec-{key}-blood", "meta": _profile("sonco-specimen"),
                      "identifier": [{"system": f"{BASE}/NamingSystem/spice-specimen", "value": f"PRL-{key}-B"}],
                      "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0487", "code": "BLD"}]},
                      "subject": subject, "receivedTime": _instant(received, 9, 30), "request": [context["request"]]})
    return resources, received


def _report_resources(context: dict, received: date, rng: random.Random) -> tuple[list[dict], date, bool, bool]:
    """Return the sequencing, the variant, the implication and the report; and the report day, whether it is actionable, whether germline."""
    key, subject = context["key"], context["subject"]
    sequenced = received + timedelta(days=rng.randrange(20, 60))
    issued = sequenced + timedelta(days=rng.randrange(1, 15))
    laboratory_category = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "laboratory"}]}
    genetics_category = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "GE"}]}
    resources = [{"resourceType": "Procedure", "id": f"seq-{key}", "meta": _profile("sonco-procedure-sequencing"),
                  "basedOn": [context["request"]], "status": "completed",
                  "category": {"coding": [{"system": MILESTONE, "code": "sequencing"}]},
                  "code": {"coding": [{"system": LOINC, "code": "86206-0"}]}, "subject": subject,
                  "performedPeriod": {"start": (received + timedelta(days=1)).isoformat(), "end": sequenced.isoformat()},
                  "performer": [{"actor": context["performer"]}]}]
    germline = rng.random() < 0.05
    variant_id = f"var-{key}"
    resources.append({"resourceType": "Observation", "id": variant_id, "meta": _profile("sonco-observation-variant"),
                      "status": "final", "category": [laboratory_category, genetics_category],
                      "code": {"coding": [{"system": LOINC, "code": "69548-6"}]}, "subject": subject,
                      "valueCodeableConcept": {"coding": [{"system": LOINC, "code": "LA9633-4"}]},
                      "component": [{"code": {"coding": [{"system": LOINC, "code": "48018-6"}]},
                                     "valueCodeableConcept": {"coding": [{"system": "http://www.genenames.org", "code": "HGNC:3236", "display": "EGFR"}]}},
                                    {"code": {"coding": [{"system": LOINC, "code": "48002-0"}]},
                                     "valueCodeableConcept": {"coding": [{"system": LOINC, "code": "LA6683-2" if germline else "LA6684-0"}]}}]})
    actionable = rng.random() < 0.4
    if actionable:
        implication_code = {"coding": [{"system": "http://hl7.org/fhir/uv/genomics-reporting/CodeSystem/tbd-codes-cs", "code": "therapeutic-implication"}]}
        resources.append({"resourceType": "Observation", "id": f"impl-{key}", "meta": _profile("sonco-observation-therapeutic-implication"),
                          "status": "final", "category": [laboratory_category, genetics_category], "code": implication_code,
                          "subject": subject, "derivedFrom": [_reference("Observation", variant_id)],
                          "component": [{"code": implication_code,
                                         "valueCodeableConcept": {"coding": [{"system": LOINC, "code": "LA6677-4"}]}}]})
    resources.append({"resourceType": "DiagnosticReport", "id": f"rep-{key}", "meta": _profile("sonco-diagnosticreport"),
                      "basedOn": [context["request"]], "status": "amended" if rng.random() < 0.05 else "final",
                      "category": [genetics_category],
                      "code": {"coding": [{"system": LOINC, "code": "51969-4"}]}, "subject": subject,
                      "issued": _instant(issued, 14, 10), "performer": [context["performer"]],
                      "specimen": [_reference("Specimen", f"spec-{key}-0")],
                      "result": [_reference("Observation", variant_id)]})
    return resources, issued, actionable, germline


def _board_resources(context: dict, issued: date, actionable: bool, germline: bool, rng: random.Random) -> list[dict]:
    """Return the RCP d'aval, the recommended treatment when started, and the trial inclusion."""
    key, subject = context["key"], context["subject"]
    board = issued + timedelta(days=rng.randrange(3, 30))
    activities = []
    drug = rng.choice(TARGETED_DRUGS)
    if actionable and rng.random() < 0.8:
        activities.append({"detail": {"code": {"coding": [{"system": RECOMMENDATION, "code": "targeted-therapy"}]},
                                      "status": "not-started", "productCodeableConcept": {"text": drug}}})
    trial = rng.random() < 0.1
    if trial:
        activities.append({"detail": {"code": {"coding": [{"system": RECOMMENDATION, "code": "clinical-trial"}]},
                                      "status": "not-started", "description": f"NCT0{rng.randrange(1000000, 9999999)}"}})
    if germline:
        activities.append({"detail": {"code": {"coding": [{"system": RECOMMENDATION, "code": "oncogenetics-referral"}]}, "status": "not-started"}})
    if not activities:
        activities.append({"detail": {"code": {"coding": [{"system": RECOMMENDATION, "code": "no-actionable-alteration"}]}, "status": "not-started"}})
    resources = [{"resourceType": "CarePlan", "id": f"aval-{key}", "meta": _profile("sonco-careplan-rcp-aval"),
                  "status": "active", "intent": "plan",
                  "category": [{"coding": [{"system": MILESTONE, "code": "rcp-aval"}]}],
                  "subject": subject, "created": board.isoformat(),
                  "supportingInfo": [_reference("DiagnosticReport", f"rep-{key}")], "activity": activities}]
    if activities[0]["detail"]["code"]["coding"][0]["code"] == "targeted-therapy" and rng.random() < 0.7:
        resources.append({"resourceType": "MedicationStatement", "id": f"med-{key}-target", "meta": _profile("sonco-medicationstatement"),
                          "status": "active", "medicationCodeableConcept": {"text": drug}, "subject": subject,
                          "effectivePeriod": {"start": (board + timedelta(days=rng.randrange(2, 45))).isoformat()}})
    if trial and rng.random() < 0.5:
        resources.append({"resourceType": "ResearchSubject", "id": f"trial-{key}", "status": "on-study",
                          "study": _reference("ResearchStudy", "bench-study"), "individual": subject})
    return resources


def patient_resources(number: int, rng: random.Random) -> list[dict]:
    """Return all resources of one synthetic patient, from the prescription to the treatment.

    About 4% stop before the RCP d'amont, 7% of the others at a sequencing
    failure, and 10% of the reported ones before the RCP d'aval.
    """
    resources, context = _request_resources(f"b{number:06d}", rng)
    if rng.random() < 0.04:
        return resources
    samples, received = _sample_resources(context, rng)
    resources += samples
    if rng.random() < 0.07:
        key = context["key"]
        resources.append({"resourceType": "Task", "id": f"fail-{key}", "meta": _profile("sonco-task-sequencing-failure"),
                          "status": "failed", "intent": "order",
                          "statusReason": {"coding": [{"system": f"{BASE}/CodeSystem/sonco-sequencing-failure-reason",
                                                       "code": rng.choice(FAILURE_REASONS)}]},
                          "code": {"coding": [{"system": MILESTONE, "code": "sequencing"}]},
                          "focus": context["request"], "for": context["subject"], "owner": context["performer"],
                          "executionPeriod": {"end": _instant(received + timedelta(days=rng.randrange(10, 40)), 10)}})
        return resources
    reported, issued, actionable, germline = _report_resources(context, received, rng)
    resources += reported
    if rng.random() < 0.1:
        return resources
    return resources + _board_resources(context, issued, actionable, germline, rng)


def generate(patients: int, seed: int = 2024):
    """Yield the shared resources, then each patient's resources in turn."""
    rng = random.Random(seed)
    yield from shared_resources()
    for number in range(patients):
        yield from patient_resources(number, rng)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=10_000, help="number of patients (default 10000)")
    parser.add_argument("--output", type=Path, required=True, help="NDJSON file to write")
    arguments = parser.parse_args()
    with arguments.output.open("w", encoding="utf-8") as handle:
        for resource in generate(arguments.patients):
            handle.write(json.dumps(resource, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
