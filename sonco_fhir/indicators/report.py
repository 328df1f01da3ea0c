"""MeasureReports (type summary, stratified by lab) and the printed table."""

from dataclasses import dataclass

from ..canonical import measure_url
from .compute import ALL, DelayResult, ShareResult

DELAY_MEASURE = "sonco-delay-prescription-report"
SHARE_MEASURE = "sonco-share-therapeutic-recommendation"
_POPULATION = "http://terminology.hl7.org/CodeSystem/measure-population"
_DAYS = {"unit": "d", "system": "http://unitsofmeasure.org", "code": "d"}


@dataclass
class DelayStatistics:
    """Continuous-variable indicator of one stratum as the SQL query returns it: statistics of the delays in days, without the delays."""

    stratum: str
    count: int  # population members with both dates
    median: float | None
    p25: float | None
    p75: float | None
    p90: float | None
    excluded: int = 0  # population members with a missing milestone


def _population(code: str, count: int) -> dict:
    return {"code": {"coding": [{"system": _POPULATION, "code": code}]}, "count": count}


def _delay_populations(result: DelayResult | DelayStatistics) -> list[dict]:
    measured = result.count if isinstance(result, DelayStatistics) else len(result.delays)
    members = measured + result.excluded
    return [_population("initial-population", members), _population("measure-population", measured),
            _population("measure-observation", measured)]


def _share_populations(result: ShareResult) -> list[dict]:
    return [_population("initial-population", result.denominator), _population("denominator", result.denominator),
            _population("numerator", result.numerator)]


def _score(value: float | None, unit: dict | None) -> dict | None:
    if value is None:
        return None
    return {"value": round(value, 4), **(unit or {})}


def measure_report(measure: str, results: dict, period: tuple[str, str], report_id: str) -> dict:
    """Build a summary MeasureReport: the overall score, and one stratum per lab."""
    is_delay = measure == DELAY_MEASURE
    populations = _delay_populations if is_delay else _share_populations
    unit = _DAYS if is_delay else None

    def score_of(result):
        return result.median if is_delay else result.score

    overall = results[ALL]
    group = {"population": populations(overall)}
    if (score := _score(score_of(overall), unit)) is not None:
        group["measureScore"] = score
    strata = []
    for key in sorted(k for k in results if k != ALL):
        stratum = {"value": {"text": key}, "population": populations(results[key])}
        if (score := _score(score_of(results[key]), unit)) is not None:
            stratum["measureScore"] = score
        strata.append(stratum)
    if strata:
        group["stratifier"] = [{"code": [{"text": "lab"}], "stratum": strata}]
    return {
        "resourceType": "MeasureReport",
        "id": report_id,
        "meta": {"profile": ["https://sonco.example/fhir/StructureDefinition/sonco-measurereport"]},
        "status": "complete",
        "type": "summary",
        "measure": measure_url(measure),
        "period": {"start": period[0], "end": period[1]},
        "group": [group],
    }
