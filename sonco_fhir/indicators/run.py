"""Compute every indicator from the server, store the MeasureReports, return printable rows.

The resources come from FHIR searches. The ViewDefinitions of `views/` flatten
them into DuckDB tables and the SQL queries of `queries/` compute the indicators
(see sql.py). compute.py computes the same values in Python and stays as the
cross-check in the tests.
"""

import hashlib
from dataclasses import dataclass

from ..loading.hapi import FhirServer
from .compute import ALL, ShareResult, paris_date
from .extract import RCP_AVAL, REPORT_CODE, REPORTED_STATUSES
from .report import DELAY_MEASURE, SHARE_MEASURE, DelayStatistics, measure_report
from .sql import compute, load_views

# Query file stem (queries/*.sql) of each Measure.
DELAY_QUERY = "delay_prescription_to_report"
SHARE_QUERY = "share_therapeutic_recommendation"

# The searches that fetch what the ViewDefinitions read. `_elements` lists
# every element a view reads, including those of its `where` filter.
SEARCHES = {
    "ServiceRequest": {"_elements": "subject,authoredOn,performer"},
    "DiagnosticReport": {"code": REPORT_CODE, "_elements": "code,subject,status,issued,basedOn"},
    "CarePlan": {"category": RCP_AVAL, "_elements": "category,subject,created,activity"},
}


@dataclass
class IndicatorRow:
    measure: str
    stratum: str
    value: float | None
    numerator: int | None
    denominator: int
    excluded: int = 0
    # Quartiles and 90th percentile in days, for delay rows with at least one delay.
    p25: float | None = None
    p75: float | None = None
    p90: float | None = None


def fetch_resources(server: FhirServer) -> dict[str, list[dict]]:
    """Run the searches of SEARCHES and return the resources by type."""
    return {resource_type: list(server.search(resource_type, dict(params))) for resource_type, params in SEARCHES.items()}


def cohort_period(resources_by_type: dict[str, list[dict]]) -> tuple[str, str]:
    """Return the first and last day with data, as the MeasureReport period.

    The days are the ServiceRequests' authoredOn and the issued of the genomic
    reports with a reported status, as calendar days in Europe/Paris.
    """
    values = [request.get("authoredOn") for request in resources_by_type.get("ServiceRequest", [])]
    values += [
        report.get("issued")
        for report in resources_by_type.get("DiagnosticReport", [])
        if report.get("status") in REPORTED_STATUSES
    ]
    days = [day for day in map(paris_date, values) if day]
    if not days:
        return ("1970-01-01", "1970-01-01")
    return (min(days).isoformat(), max(days).isoformat())


def _strata_in_order(results: dict) -> list[str]:
    return [ALL, *sorted(key for key in results if key != ALL)]


def compute_all(resources_by_type: dict[str, list[dict]]) -> tuple[list[IndicatorRow], dict[str, dict]]:
    """Compute both indicators in DuckDB. Return the printable rows and the results by Measure for report.py."""
    query_results = compute(load_views(resources_by_type))

    delays = {
        stratum: DelayStatistics(stratum, row["count"], row["median"], row["p25"], row["p75"], row["p90"], row["excluded"])
        for stratum, row in query_results[DELAY_QUERY].items()
    }
    shares = {
        stratum: ShareResult(stratum, row["numerator"], row["denominator"])
        for stratum, row in query_results[SHARE_QUERY].items()
    }

    rows = []
    for key in _strata_in_order(delays):
        result = delays[key]
        rows.append(IndicatorRow(DELAY_MEASURE, key, result.median, None, result.count, result.excluded,
                                 result.p25, result.p75, result.p90))
    for key in _strata_in_order(shares):
        result = shares[key]
        rows.append(IndicatorRow(SHARE_MEASURE, key, result.score, result.numerator, result.denominator))
    return rows, {DELAY_MEASURE: delays, SHARE_MEASURE: shares}


def run_indicators(server: FhirServer, store: bool) -> tuple[list[IndicatorRow], list[dict]]:
    resources_by_type = fetch_resources(server)
    rows, results = compute_all(resources_by_type)
    period = cohort_period(resources_by_type)
    reports = []
    for measure, measure_results in results.items():
        report_id = "sonco-" + hashlib.sha256(f"{measure}|{period[0]}|{period[1]}".encode()).hexdigest()[:32]
        reports.append(measure_report(measure, measure_results, period, report_id))
    if store:
        for report in reports:
            server.update(report)
    return rows, reports
