"""Summary MeasureReports of the indicators: overall populations and score, one stratifier per dimension.

A suppressed cell (see suppress.py) is left out: the profile requires a
count on every population, so a suppressed stratum has no place in the
report. An indicator whose overall cell is suppressed, or gives no score,
gets no MeasureReport at all, because HAPI's $validate requires the
population counts of every Measure population and, for a continuous
variable, a measureScore.
"""

from ..canonical import measure_url, profile_url
from .catalogue import DELAY, Indicator
from .strata import DIMENSIONS

OVERALL = "*"
_POPULATION = "http://terminology.hl7.org/CodeSystem/measure-population"
_UCUM = "http://unitsofmeasure.org"
DAYS = {"unit": "d", "system": _UCUM, "code": "d"}
LINES = {"unit": "lines", "system": _UCUM, "code": "{line}"}


def _population(code: str, count: int) -> dict:
    return {"code": {"coding": [{"system": _POPULATION, "code": code}]}, "count": count}


def populations(indicator: Indicator, cell: dict) -> list[dict]:
    """Population counts of one cell, with the codes the Quality Measure IG uses for the indicator's scoring."""
    if indicator.continuous:
        members = cell["count"] + cell["excluded"]
        return [_population("initial-population", members), _population("measure-population", members),
                _population("measure-population-exclusion", cell["excluded"]),
                _population("measure-observation", cell["count"])]
    return [_population("initial-population", cell["denominator"]), _population("denominator", cell["denominator"]),
            _population("numerator", cell["numerator"])]


def score(indicator: Indicator, cell: dict) -> dict | None:
    """Return the cell's measureScore: the median of a delay (days) or of a count, the proportion of a share, None when nothing was measured."""
    if indicator.continuous:
        if cell["median"] is None:
            return None
        return {"value": round(cell["median"], 4), **(DAYS if indicator.kind == DELAY else LINES)}
    if not cell["denominator"]:
        return None
    return {"value": round(cell["numerator"] / cell["denominator"], 4)}


def reportable(indicator: Indicator, cells: list[dict]) -> bool:
    """Tell whether the indicator's overall cell can make a valid MeasureReport: published, and scored when continuous."""
    overall = next(cell for cell in cells if cell["dimension"] == OVERALL)
    if overall["suppressed"]:
        return False
    return not indicator.continuous or overall["median"] is not None


def _content(indicator: Indicator, cell: dict) -> dict:
    content = {"population": populations(indicator, cell)}
    if (measure_score := score(indicator, cell)) is not None:
        content["measureScore"] = measure_score
    return content


def measure_report(indicator: Indicator, cells: list[dict], period: tuple[str, str], report_id: str) -> dict:
    """Build the summary MeasureReport of one indicator from its suppressed cells, when `reportable` allows it."""
    overall = next(cell for cell in cells if cell["dimension"] == OVERALL)
    group: dict = {"code": {"text": indicator.id}, **_content(indicator, overall)}
    stratifiers = []
    # Every stratifier of the Measure appears, as the validator requires; one not requested has no stratum.
    for dimension in DIMENSIONS:
        strata = [{"value": {"text": cell["stratum"]}, **_content(indicator, cell)}
                  for cell in cells if cell["dimension"] == dimension and not cell["suppressed"]]
        stratifier: dict = {"code": [{"text": dimension}]}
        if strata:
            stratifier["stratum"] = strata
        stratifiers.append(stratifier)
    group["stratifier"] = stratifiers
    return {
        "resourceType": "MeasureReport",
        "id": report_id,
        "meta": {"profile": [profile_url("sonco-measurereport")]},
        "status": "complete",
        "type": "summary",
        "measure": measure_url(indicator.id),
        "period": {"start": period[0], "end": period[1]},
        "group": [group],
    }
