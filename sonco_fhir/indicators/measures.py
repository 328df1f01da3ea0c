"""Build the Measure resource of each catalogue indicator, as stored in `profiles/measures/`.

`python -m sonco_fhir.indicators.measures` rewrites the files; a test
checks that they equal what this module builds. Titles and descriptions
come from the French and English locale fragments.
"""

import json
from pathlib import Path

from .. import i18n
from ..canonical import measure_url, profile_url
from .catalogue import CATALOGUE, Indicator
from .strata import DIMENSIONS

MEASURES_DIR = Path(__file__).resolve().parents[2] / "profiles" / "measures"
VERSION = "0.2.0"
DATE = "2026-12-04"
FHIR_QUERY = "application/x-fhir-query"
_POPULATION = "http://terminology.hl7.org/CodeSystem/measure-population"
_CQFM = "http://hl7.org/fhir/us/cqfmeasures/StructureDefinition"


def _text(key: str, language: str) -> str:
    previous = i18n.language()
    i18n.set_language(language)
    try:
        return i18n.t(key)
    finally:
        i18n.set_language(previous)


# The FHIR search that fetches each kind of population member. Expression
# languages in FHIR R4 are text/cql, text/fhirpath and application/x-fhir-query,
# so the criteria give this search as the expression and name the SQL query
# that selects the members in their description.
UNIT_SEARCHES = {
    "request": "ServiceRequest",
    "patient": "Patient",
    "report": "DiagnosticReport?code=http://loinc.org|51969-4",
    "specimen": "Specimen",
}


def _population(population_id: str, code: str, description: str, indicator: Indicator) -> dict:
    return {
        "id": population_id,
        "code": {"coding": [{"system": _POPULATION, "code": code}]},
        "criteria": {"description": f"{description} (SQL: queries/{indicator.query}.sql)", "language": FHIR_QUERY,
                     "expression": UNIT_SEARCHES[indicator.unit]},
    }


def _populations(indicator: Indicator) -> list[dict]:
    unit = indicator.unit
    if indicator.continuous:
        observation = _population("mo", "measure-observation", f"The value of each {unit} measured, aggregated by the median "
                                  "(rows with a non-null value)", indicator)
        observation["extension"] = [
            {"url": f"{_CQFM}/cqfm-aggregateMethod", "valueCode": "median"},
            {"url": f"{_CQFM}/cqfm-criteriaReference", "valueString": "mp"},
        ]
        return [
            _population("ip", "initial-population", f"Every {unit} the query returns", indicator),
            _population("mp", "measure-population", "Same as the initial population", indicator),
            _population("mpe", "measure-population-exclusion", "Members with a missing milestone, excluded and counted "
                        "(rows with a null value)", indicator),
            observation,
        ]
    return [
        _population("ip", "initial-population", f"Every {unit} the query returns", indicator),
        _population("den", "denominator", "Same as the initial population", indicator),
        _population("num", "numerator", "Members meeting the indicator's condition (rows where hit is true)", indicator),
    ]


def _stratifiers() -> list[dict]:
    return [
        {"id": name, "code": {"text": name},
         "description": f"Stratum {name} of the member's prescription: {expression} over request_milestone (alias m)"}
        for name, expression in DIMENSIONS.items()
    ]


def build_measure(indicator: Indicator) -> dict:
    """Return the Measure resource of one indicator."""
    name = "Sonco" + "".join(part.capitalize() for part in indicator.id.removeprefix("sonco-").split("-"))
    scoring = "continuous-variable" if indicator.continuous else "proportion"
    description = (f"{_text(f'indicator.{indicator.id}.definition', 'fr')} "
                   f"{_text(f'indicator.{indicator.id}.definition', 'en')}")
    measure = {
        "resourceType": "Measure",
        "id": indicator.id,
        "meta": {"profile": [profile_url("sonco-measure")]},
        "url": measure_url(indicator.id),
        "version": VERSION,
        "name": name,
        "title": _text(f"indicator.{indicator.id}", "fr"),
        "status": "active",
        "date": DATE,
        "publisher": "SONCO",
        "description": description,
        "scoring": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/measure-scoring", "code": scoring}]},
    }
    if indicator.improvement:
        measure["improvementNotation"] = {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/measure-improvement-notation", "code": indicator.improvement}]}
    measure["group"] = [{"population": _populations(indicator), "stratifier": _stratifiers()}]
    return measure


def measure_text(indicator: Indicator) -> str:
    return json.dumps(build_measure(indicator), indent=2, ensure_ascii=False) + "\n"


def write_measures(directory: Path = MEASURES_DIR) -> list[Path]:
    """Write one Measure-<id>.json per indicator and return the paths."""
    paths = []
    for indicator in CATALOGUE:
        path = directory / f"Measure-{indicator.id}.json"
        path.write_text(measure_text(indicator), encoding="utf-8")
        paths.append(path)
    return paths


if __name__ == "__main__":
    for written in write_measures():
        print(written)
