"""Fetch the resources, compute every indicator of the catalogue, apply suppression, build and store the MeasureReports.

The resources come from FHIR searches (SEARCHES), paged by following next
links with HAPI's search cache bypassed (FhirServer.search). The
ViewDefinitions of `views/` flatten them into DuckDB tables and the SQL
queries of `queries/` compute the indicators (see sql.py).
"""

import hashlib
import time
from dataclasses import dataclass, field

from ..canonical import CANONICAL_BASE
from ..loading.hapi import FhirServer
from .catalogue import BY_ID
from .report import measure_report, reportable
from .sql import compute, load_views
from .strata import Period
from .suppress import suppress

MILESTONE_SYSTEM = f"{CANONICAL_BASE}/CodeSystem/sonco-pathway-milestone"
REPORT_CODE = "http://loinc.org|51969-4"
VARIANT_CODE = "http://loinc.org|69548-6"
IMPLICATION_CODE = "http://hl7.org/fhir/uv/genomics-reporting/CodeSystem/tbd-codes-cs|therapeutic-implication"

# The searches that fetch what the ViewDefinitions read, one per resource
# type. `_elements` lists every element a view reads, including those of its
# `where` filter; a token list separated by commas is an OR in FHIR search.
SEARCHES = {
    "ServiceRequest": {"_elements": "subject,authoredOn,performer,reasonCode,requester"},
    "Task": {
        "code": f"{MILESTONE_SYSTEM}|rcp-amont-validation,{MILESTONE_SYSTEM}|sequencing",
        "_elements": "code,status,businessStatus,statusReason,focus,for,executionPeriod",
    },
    "Specimen": {"_elements": "subject,type,processing,receivedTime,collection,request,extension"},
    "Procedure": {"category": f"{MILESTONE_SYSTEM}|sequencing", "_elements": "category,subject,status,performed,basedOn,followUp"},
    "DiagnosticReport": {"code": REPORT_CODE, "_elements": "code,subject,status,issued,basedOn,result"},
    "Observation": {"code": f"{VARIANT_CODE},{IMPLICATION_CODE}", "_elements": "code,subject,value,component,derivedFrom"},
    "CarePlan": {"category": f"{MILESTONE_SYSTEM}|rcp-aval", "_elements": "category,subject,created,activity,supportingInfo"},
    "MedicationStatement": {"_elements": "subject,status,medication,effective"},
    "Condition": {"_elements": "subject,code,recordedDate"},
    "ResearchSubject": {"_elements": "individual,status,study"},
}


@dataclass
class IndicatorRun:
    """Result of one run: suppressed cells by Measure id, the MeasureReports, and timings in seconds."""

    cells: dict[str, list[dict]]
    reports: list[dict]
    period: tuple[str, str]
    dimensions: tuple[str, ...]
    threshold: int
    timings: dict[str, float] = field(default_factory=dict)


def fetch_resources(server: FhirServer) -> dict[str, list[dict]]:
    """Run the searches of SEARCHES and return the resources by type."""
    return {resource_type: list(server.search(resource_type, dict(params))) for resource_type, params in SEARCHES.items()}


def report_period(connection, period: Period | None) -> tuple[str, str]:
    """Return the MeasureReport period: the requested one, else the first and last prescription days of the cohort."""
    if period:
        return period.start.isoformat(), period.end.isoformat()
    first, last = connection.execute("SELECT min(prescribed_day), max(prescribed_day) FROM request_milestone").fetchone()
    if first is None:
        return ("1970-01-01", "1970-01-01")
    return first.isoformat(), last.isoformat()


def report_id(measure: str, period: tuple[str, str], dimensions: tuple[str, ...]) -> str:
    """Return a stable id, so that a run over the same period and strata replaces its previous MeasureReport."""
    key = f"{measure}|{period[0]}|{period[1]}|{','.join(dimensions)}"
    return "sonco-" + hashlib.sha256(key.encode()).hexdigest()[:32]


def compute_run(resources_by_type: dict[str, list[dict]], dimensions: tuple[str, ...], period: Period | None,
                threshold: int) -> IndicatorRun:
    """Compute, suppress and report every indicator over resources already fetched."""
    started = time.perf_counter()
    connection = load_views(resources_by_type)
    flattened = time.perf_counter()
    raw = compute(connection, dimensions, period)
    computed = time.perf_counter()
    cells = {measure: suppress(measure_cells, threshold) for measure, measure_cells in raw.items()}
    covered = report_period(connection, period)
    reports = [measure_report(BY_ID[measure], measure_cells, covered, report_id(measure, covered, dimensions))
               for measure, measure_cells in cells.items() if reportable(BY_ID[measure], measure_cells)]
    timings = {"flatten": flattened - started, "sql": computed - flattened, "compute": time.perf_counter() - started}
    return IndicatorRun(cells, reports, covered, dimensions, threshold, timings)


def run_indicators(server: FhirServer, store: bool, dimensions: tuple[str, ...] = ("lab",), period: Period | None = None,
                   threshold: int = 10) -> IndicatorRun:
    """Fetch, compute and, when `store` is set, store one MeasureReport per indicator in the server."""
    started = time.perf_counter()
    resources_by_type = fetch_resources(server)
    fetched = time.perf_counter()
    run = compute_run(resources_by_type, dimensions, period, threshold)
    run.timings["extract"] = fetched - started
    if store:
        for report in run.reports:
            server.update(report)
    run.timings["total"] = time.perf_counter() - started
    return run
