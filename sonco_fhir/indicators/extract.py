"""Extraction: the FHIR searches the indicators read, flattened into rows."""

from dataclasses import dataclass, field

from ..canonical import CANONICAL_BASE
from ..loading.hapi import FhirServer

REPORT_CODE = "http://loinc.org|51969-4"
RCP_AVAL = f"{CANONICAL_BASE}/CodeSystem/sonco-pathway-milestone|rcp-aval"
RECOMMENDATION_SYSTEM = f"{CANONICAL_BASE}/CodeSystem/sonco-rcp-recommendation"
THERAPEUTIC_RECOMMENDATIONS = {"targeted-therapy", "clinical-trial"}
REPORTED_STATUSES = {"final", "amended", "corrected", "appended"}


@dataclass
class CohortData:
    requests: dict[str, dict] = field(default_factory=dict)  # "ServiceRequest/id" -> row
    reports: list[dict] = field(default_factory=list)
    care_plans: list[dict] = field(default_factory=list)


def _patient(reference_holder: dict | None) -> str | None:
    return (reference_holder or {}).get("reference")


def extract(server: FhirServer) -> CohortData:
    data = CohortData()
    for request in server.search("ServiceRequest", {"_elements": "authoredOn,performer,subject,status,code"}):
        performer = (request.get("performer") or [{}])[0]
        data.requests[f"ServiceRequest/{request['id']}"] = {
            "id": request["id"],
            "patient": _patient(request.get("subject")),
            "authored_on": request.get("authoredOn"),
            "lab": performer.get("display"),
        }
    for report in server.search("DiagnosticReport", {"code": REPORT_CODE, "_elements": "status,issued,basedOn,subject"}):
        if report.get("status") not in REPORTED_STATUSES:
            continue
        data.reports.append({
            "id": report["id"],
            "patient": _patient(report.get("subject")),
            "issued": report.get("issued"),
            "requests": [based_on.get("reference") for based_on in report.get("basedOn", [])],
        })
    for plan in server.search("CarePlan", {"category": RCP_AVAL, "_elements": "subject,created,activity,status"}):
        codes = {
            coding.get("code")
            for activity in plan.get("activity", [])
            for coding in activity.get("detail", {}).get("code", {}).get("coding", [])
            if coding.get("system") == RECOMMENDATION_SYSTEM
        }
        data.care_plans.append({"id": plan["id"], "patient": _patient(plan.get("subject")), "created": plan.get("created"), "recommendations": codes})
    return data
