"""The indicators themselves: plain functions of the extracted rows, testable without a server.

Delays are calendar days between the two dates as seen in Europe/Paris: an
instant is first converted to Paris time, a date-only value is taken as is.
"""

import statistics
from dataclasses import dataclass, field
from datetime import date, datetime
from zoneinfo import ZoneInfo

from .extract import THERAPEUTIC_RECOMMENDATIONS, CohortData

PARIS = ZoneInfo("Europe/Paris")
ALL = "*"


def paris_date(value: str | None) -> date | None:
    """Return the calendar day of a FHIR date or dateTime in Europe/Paris, or None when only a year or month is known."""
    if not value or len(value) < 10:
        return None
    if len(value) == 10:
        return date.fromisoformat(value)
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        return moment.date()
    return moment.astimezone(PARIS).date()


@dataclass
class DelayResult:
    """Continuous-variable indicator: one stratum's delays in days."""

    stratum: str
    delays: list[int] = field(default_factory=list)
    excluded: int = 0  # population members with a missing milestone

    @property
    def median(self) -> float | None:
        return statistics.median(self.delays) if self.delays else None


@dataclass
class ShareResult:
    """Proportion indicator: one stratum's numerator over denominator."""

    stratum: str
    numerator: int = 0
    denominator: int = 0

    @property
    def score(self) -> float | None:
        return self.numerator / self.denominator if self.denominator else None


def delay_prescription_to_report(data: CohortData) -> dict[str, DelayResult]:
    """Days from ServiceRequest.authoredOn to the first DiagnosticReport.issued, per lab and overall."""
    first_report: dict[str, date | None] = {}
    for report in data.reports:
        issued = paris_date(report["issued"])
        for request_ref in report["requests"]:
            if request_ref not in data.requests:
                continue  # a hospital report outside a SONCO prescription
            known = first_report.get(request_ref)
            if request_ref not in first_report or (issued and (known is None or issued < known)):
                first_report[request_ref] = issued

    results: dict[str, DelayResult] = {ALL: DelayResult(ALL)}
    for request_ref, issued in first_report.items():
        request = data.requests[request_ref]
        lab = request.get("lab") or "?"
        authored = paris_date(request.get("authored_on"))
        for key in (ALL, lab):
            result = results.setdefault(key, DelayResult(key))
            if authored is None or issued is None:
                result.excluded += 1
            else:
                result.delays.append((issued - authored).days)
    return results


def share_with_therapeutic_recommendation(data: CohortData) -> dict[str, ShareResult]:
    """Share of patients with a report whose RCP d'aval recommended a targeted therapy or a trial."""
    recommended = {
        plan["patient"] for plan in data.care_plans if plan["recommendations"] & THERAPEUTIC_RECOMMENDATIONS
    }
    labs_of_patient: dict[str, set[str]] = {}
    for report in data.reports:
        for request_ref in report["requests"]:
            if request_ref in data.requests:
                labs_of_patient.setdefault(report["patient"], set()).add(data.requests[request_ref].get("lab") or "?")

    results: dict[str, ShareResult] = {ALL: ShareResult(ALL)}
    for patient, labs in labs_of_patient.items():
        for key in (ALL, *sorted(labs)):
            result = results.setdefault(key, ShareResult(key))
            result.denominator += 1
            if patient in recommended:
                result.numerator += 1
    return results
