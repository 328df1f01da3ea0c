"""Compute every indicator from the server, store the MeasureReports, return printable rows."""

import hashlib
from dataclasses import dataclass

from ..loading.hapi import FhirServer
from .compute import ALL, delay_prescription_to_report, paris_date, share_with_therapeutic_recommendation
from .extract import CohortData, extract
from .report import DELAY_MEASURE, SHARE_MEASURE, measure_report


@dataclass
class IndicatorRow:
    measure: str
    stratum: str
    value: float | None
    numerator: int | None
    denominator: int
    excluded: int = 0


def cohort_period(data: CohortData) -> tuple[str, str]:
    """The first and last day with data, as the MeasureReport period."""
    days = [paris_date(r["authored_on"]) for r in data.requests.values()] + [paris_date(r["issued"]) for r in data.reports]
    days = [day for day in days if day]
    if not days:
        return ("1970-01-01", "1970-01-01")
    return (min(days).isoformat(), max(days).isoformat())


def compute_all(data: CohortData) -> tuple[list[IndicatorRow], dict[str, dict]]:
    delays = delay_prescription_to_report(data)
    shares = share_with_therapeutic_recommendation(data)
    rows = []
    for key in [ALL, *sorted(k for k in delays if k != ALL)]:
        result = delays[key]
        rows.append(IndicatorRow(DELAY_MEASURE, key, result.median, None, len(result.delays), result.excluded))
    for key in [ALL, *sorted(k for k in shares if k != ALL)]:
        result = shares[key]
        rows.append(IndicatorRow(SHARE_MEASURE, key, result.score, result.numerator, result.denominator))
    return rows, {DELAY_MEASURE: delays, SHARE_MEASURE: shares}


def run_indicators(server: FhirServer, store: bool) -> tuple[list[IndicatorRow], list[dict]]:
    data = extract(server)
    rows, results = compute_all(data)
    period = cohort_period(data)
    reports = []
    for measure, measure_results in results.items():
        report_id = "sonco-" + hashlib.sha256(f"{measure}|{period[0]}|{period[1]}".encode()).hexdigest()[:32]
        reports.append(measure_report(measure, measure_results, period, report_id))
    if store:
        for report in reports:
            server.update(report)
    return rows, reports
