"""run_indicators end to end: searches, suppression in every output, MeasureReports, the HTML report, the CLI on a real HAPI and $validate.

The cohort and its hand-computed values are those of test_indicator_sql.
"""

import csv
import io
import json
import re
import shutil
import subprocess

import pytest
import requests
from typer.testing import CliRunner

from sonco_fhir import i18n
from sonco_fhir.cli.indicator_commands import _csv_text, _table
from sonco_fhir.cli.main import build_app
from sonco_fhir.indicators import output
from sonco_fhir.indicators.catalogue import BY_ID, CATALOGUE
from sonco_fhir.indicators.html import render_html
from sonco_fhir.indicators.measures import MEASURES_DIR, measure_text
from sonco_fhir.indicators.run import SEARCHES, run_indicators
from sonco_fhir.indicators.sql import load_view_definitions
from sonco_fhir.indicators.strata import DIMENSIONS
from conftest import REPOSITORY
from test_indicator_sql import cohort

DELAY = "sonco-delay-prescription-report"
SHARE = "sonco-share-therapeutic-recommendation"
POPULATION = "http://terminology.hl7.org/CodeSystem/measure-population"


class InMemoryServer:
    """Stand-in for FhirServer: search filters by type and by the token parameters of SEARCHES (comma = OR); update records."""

    TOKEN_ELEMENTS = {"code", "category"}

    def __init__(self, resources):
        self.resources = resources
        self.searches = []
        self.stored = []

    def search(self, resource_type, params=None):
        self.searches.append((resource_type, dict(params or {})))
        for resource in self.resources:
            if resource["resourceType"] == resource_type and self._matches(resource, params or {}):
                yield resource

    def update(self, resource):
        self.stored.append(resource)

    def _matches(self, resource, params):
        for name, value in params.items():
            if name not in self.TOKEN_ELEMENTS:
                continue  # _elements only trims the result
            wanted = {tuple(token.split("|")) for token in value.split(",")}
            element = resource.get(name) or []
            concepts = element if isinstance(element, list) else [element]
            codings = {(coding.get("system"), coding.get("code")) for concept in concepts for coding in concept.get("coding", [])}
            if not wanted & codings:
                return False
        return True


def cells_of(run, measure, dimension):
    return {cell["stratum"]: cell for cell in run.cells[measure] if cell["dimension"] == dimension}


def population_counts(content):
    return {population["code"]["coding"][0]["code"]: population["count"] for population in content["population"]}


def test_searches_cover_view_resources():
    assert {view["resource"] for view in load_view_definitions()} == set(SEARCHES)


def test_searches_filter_and_trim():
    server = InMemoryServer(cohort())

    run_indicators(server, store=False, threshold=0)

    params = dict(server.searches)
    assert list(params) == list(SEARCHES)
    assert params["DiagnosticReport"]["code"] == "http://loinc.org|51969-4"
    assert params["CarePlan"]["category"].endswith("sonco-pathway-milestone|rcp-aval")
    assert params["Task"]["code"].count(",") == 1
    for resource_type, search in params.items():
        assert "_elements" in search, resource_type
        assert "_sort" not in search, resource_type
        assert "_revinclude" not in search, resource_type


def test_run_without_suppression():
    run = run_indicators(InMemoryServer(cohort()), store=False, dimensions=("lab", "month"), threshold=0)

    assert list(run.cells) == [indicator.id for indicator in CATALOGUE]
    assert run.period == ("2024-01-05", "2024-10-26")
    delay = cells_of(run, DELAY, "lab")
    assert (delay["SeqOIA"]["median"], delay["AURAGEN"]["median"]) == (40.5, 11)
    assert cells_of(run, DELAY, "month")["2024-10"]["median"] == 2
    assert not any(cell["suppressed"] for cells in run.cells.values() for cell in cells)


def test_measure_reports_shape():
    server = InMemoryServer(cohort())

    run = run_indicators(server, store=True, dimensions=("lab", "month"), threshold=0)

    assert server.stored == run.reports
    assert len(run.reports) == len(CATALOGUE)
    delay = next(report for report in run.reports if report["measure"].endswith(DELAY))
    assert delay["type"] == "summary"
    assert delay["period"] == {"start": "2024-01-05", "end": "2024-10-26"}
    group = delay["group"][0]
    assert group["measureScore"] == {"value": 25.5, "unit": "d", "system": "http://unitsofmeasure.org", "code": "d"}
    # Delays 2, 20, 31, 50 measured; r4 excluded for its missing authoredOn.
    assert population_counts(group) == {"initial-population": 5, "measure-population": 5,
                                        "measure-population-exclusion": 1, "measure-observation": 4}
    # Every stratifier of the Measure is there; only those of --by have strata.
    assert [stratifier["code"][0]["text"] for stratifier in group["stratifier"]] == list(DIMENSIONS)
    assert [stratifier["code"][0]["text"] for stratifier in group["stratifier"] if "stratum" in stratifier] == ["lab", "month"]
    labs = {stratum["value"]["text"]: stratum["measureScore"]["value"] for stratum in group["stratifier"][0]["stratum"]}
    assert labs == {"AURAGEN": 11, "SeqOIA": 40.5}

    share = next(report for report in run.reports if report["measure"].endswith(SHARE))
    assert share["group"][0]["measureScore"] == {"value": 0.5}
    assert population_counts(share["group"][0]) == {"initial-population": 4, "denominator": 4, "numerator": 2}


def test_report_ids_stable_per_strata():
    first = run_indicators(InMemoryServer(cohort()), store=False, dimensions=("lab",), threshold=0)
    second = run_indicators(InMemoryServer(cohort()), store=False, dimensions=("lab",), threshold=0)
    monthly = run_indicators(InMemoryServer(cohort()), store=False, dimensions=("month",), threshold=0)

    assert [report["id"] for report in first.reports] == [report["id"] for report in second.reports]
    assert first.reports[0]["id"] != monthly.reports[0]["id"]


@pytest.fixture
def suppressed_run():
    """Threshold 3: SeqOIA has 2 reported patients (p1, p2) and is suppressed; AURAGEN (3) goes with it, as its complement."""
    return run_indicators(InMemoryServer(cohort()), store=False, dimensions=("lab",), threshold=3)


def test_suppressed_cells(suppressed_run):
    share = cells_of(suppressed_run, SHARE, "lab")
    overall = cells_of(suppressed_run, SHARE, "*")["*"]

    assert share["SeqOIA"]["suppressed"]
    assert share["AURAGEN"]["suppressed"]
    assert share["SeqOIA"]["numerator"] is None
    assert share["AURAGEN"]["denominator"] is None
    assert (overall["suppressed"], overall["numerator"], overall["denominator"]) == (False, 2, 4)
    # The completeness of the treatment has 2 patients overall: everything is suppressed.
    assert all(cell["suppressed"] for cell in suppressed_run.cells["sonco-completeness-treatment"])


def test_suppressed_in_measure_report(suppressed_run):
    share = next(report for report in suppressed_run.reports if report["measure"].endswith(SHARE))

    empty_stratifiers = [{"code": [{"text": name}]} for name in DIMENSIONS]
    assert share["group"][0]["stratifier"] == empty_stratifiers
    assert population_counts(share["group"][0])["numerator"] == 2
    # The completeness of the treatment is suppressed overall (2 patients): no MeasureReport.
    assert not any(report["measure"].endswith("sonco-completeness-treatment") for report in suppressed_run.reports)


def test_suppressed_in_csv_and_json(suppressed_run):
    records = output.records(suppressed_run.cells)
    rows = list(csv.DictReader(io.StringIO(_csv_text(records))))
    by_key = {(row["indicator"], row["stratum"]): row for row in rows}
    document = json.loads(json.dumps(records))
    json_by_key = {(record["indicator"], record["stratum"]): record for record in document}

    assert by_key[(SHARE, "SeqOIA")]["suppressed"] == "True"
    assert (by_key[(SHARE, "SeqOIA")]["numerator"], by_key[(SHARE, "SeqOIA")]["value"], by_key[(SHARE, "SeqOIA")]["patients"]) == ("", "", "")
    assert by_key[(SHARE, "*")]["numerator"] == "2"
    assert json_by_key[(SHARE, "AURAGEN")]["value"] is None
    assert json_by_key[(SHARE, "*")]["value"] == 0.5
    assert len(rows) == sum(len(cells) for cells in suppressed_run.cells.values())


def test_suppressed_in_table(suppressed_run):
    i18n.set_language("en")
    try:
        from rich.console import Console

        console = Console(width=250, record=True)
        console.print(_table(suppressed_run))
        text = console.export_text()
    finally:
        i18n.set_language("fr")

    lines = text.splitlines()
    start = next(index for index, line in enumerate(lines) if "Reported patients with a therapeutic recommendation" in line)
    overall, first_lab, second_lab = lines[start:start + 3]
    assert "2 / 4" in overall
    assert "AURAGEN" in first_lab
    assert "suppressed (< 3 patients)" in first_lab
    assert "SeqOIA" in second_lab
    assert "suppressed (< 3 patients)" in second_lab


def test_detail_text_localised():
    run = run_indicators(InMemoryServer(cohort()), store=False, threshold=0)
    cell = run.cells[DELAY][0]
    indicator = BY_ID[DELAY]

    assert output.detail_text(indicator, cell, 0) == "4 mesuré(s), 1 exclu(s) faute de date, quartiles 15,5–35,75 j, 90e centile 44,3 j"
    i18n.set_language("en")
    try:
        assert output.detail_text(indicator, cell, 0) == "4 counted, 1 excluded for a missing date, quartiles 15.5–35.75 d, 90th percentile 44.3 d"
        assert output.value_text(BY_ID[SHARE], run.cells[SHARE][0]) == "50.0%"
    finally:
        i18n.set_language("fr")
    assert output.value_text(BY_ID[SHARE], run.cells[SHARE][0]) == "50,0 %"


def html_report(language, threshold=0):
    run = run_indicators(InMemoryServer(cohort()), store=False, dimensions=("lab", "month"), threshold=threshold)
    i18n.set_language(language)
    try:
        return render_html(run)
    finally:
        i18n.set_language("fr")


def test_html_content_french():
    text = html_report("fr")

    assert text.startswith("<!DOCTYPE html>")
    assert '<html lang="fr">' in text
    assert "Distribution des délais par laboratoire" in text
    assert "Tendances mensuelles" in text
    assert "Complétude des données" in text
    assert "Délai prescription → compte rendu (de bout en bout)" in text
    assert "25,5 j" in text  # median of the end-to-end delay
    assert "40,5 j" in text  # SeqOIA
    assert "2024-10" in text  # a month of the trend chart
    assert text.count("<svg") >= 3


def test_html_self_contained():
    text = html_report("en")

    assert '<html lang="en">' in text
    assert "Delay distributions per lab" in text
    assert "25.5 d" in text
    assert re.search(r"(https?:)?//[a-z]", text) is None
    assert "<script" not in text
    assert "<link" not in text
    assert "@import" not in text


def test_html_suppressed_cells():
    text = html_report("en", threshold=3)

    assert "suppressed (&lt; 3 patients)" in text
    assert 'class="suppressed"' in text


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed, so the report cannot be rendered")
def test_html_renders_in_chromium(tmp_path):
    page = tmp_path / "report.html"
    page.write_text(html_report("fr"), encoding="utf-8")
    screenshot = tmp_path / "report.png"

    result = subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1280,2000",
         f"--screenshot={screenshot}", page.as_uri()],
        capture_output=True, text=True, timeout=120,
    )

    assert screenshot.exists(), result.stderr[-2000:]
    assert screenshot.stat().st_size > 20_000  # a blank page is a few kilobytes
    dom = subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", page.as_uri()],
                         capture_output=True, text=True, timeout=120)
    assert "Distribution des délais par laboratoire" in dom.stdout


def test_measure_files_match_catalogue():
    files = sorted(path.name for path in MEASURES_DIR.glob("Measure-*.json"))

    assert files == sorted(f"Measure-{indicator.id}.json" for indicator in CATALOGUE)
    for indicator in CATALOGUE:
        path = MEASURES_DIR / f"Measure-{indicator.id}.json"
        assert path.read_text(encoding="utf-8") == measure_text(indicator), f"run python -m sonco_fhir.indicators.measures: {path.name}"


def test_measure_scoring_matches_kind():
    for indicator in CATALOGUE:
        measure = json.loads((MEASURES_DIR / f"Measure-{indicator.id}.json").read_text(encoding="utf-8"))
        scoring = measure["scoring"]["coding"][0]["code"]
        codes = [population["code"]["coding"][0]["code"] for population in measure["group"][0]["population"]]
        if indicator.continuous:
            assert scoring == "continuous-variable", indicator.id
            assert codes == ["initial-population", "measure-population", "measure-population-exclusion", "measure-observation"]
            assert measure["group"][0]["population"][3]["extension"][0]["valueCode"] == "median"
        else:
            assert scoring == "proportion", indicator.id
            assert codes == ["initial-population", "denominator", "numerator"]


# --- On the session's HAPI server ---

def shifted_cohort():
    """The cohort moved to 1995-1996, which share 2023-2024's calendar and Paris time changes, plus the resources it references.

    The session's server also contains other tests' data (prescribed in 2024),
    so the server tests read only the period 1995..1996.
    """
    text = json.dumps(cohort()).replace('"2024-', '"1996-').replace('"2023-', '"1995-')
    resources = json.loads(text)
    patients = [{"resourceType": "Patient", "id": f"p{number}"} for number in range(1, 7)]
    study = {"resourceType": "ResearchStudy", "id": "study-1", "status": "active"}
    return patients + [study] + resources


def load(base_url, resources):
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": resource, "request": {"method": "PUT", "url": f"{resource['resourceType']}/{resource['id']}"}}
        for resource in resources]}
    response = requests.post(base_url, json=bundle, headers={"Content-Type": "application/fhir+json"}, timeout=120)
    assert response.status_code == 200, response.text[:2000]


@pytest.fixture(scope="module")
def loaded_server(hapi):
    load(hapi, shifted_cohort())
    return hapi


@pytest.mark.server
def test_cli_json_on_server(loaded_server, monkeypatch):
    monkeypatch.setenv("SONCO_FHIR_URL", loaded_server)
    result = CliRunner().invoke(build_app(), ["indicators", "--format", "json", "--no-store", "--by", "lab,quarter",
                                              "--period", "1995..1996", "--suppression-threshold", "0"])

    assert result.exit_code == 0, result.output
    records = {(record["indicator"], record["dimension"], record["stratum"]): record for record in json.loads(result.stdout)}
    # r4 has no prescription day, so the period leaves it out: delays 2, 20, 31, 50 with none excluded.
    delay = records[(DELAY, "*", "*")]
    assert (delay["count"], delay["median"], delay["excluded"]) == (4, 25.5, 0)
    assert records[(DELAY, "quarter", "1996-Q1")]["median"] == 40.5
    # Reported patients without p4: p1, p2, p5, of whom p1 and p5 have a recommendation.
    share = records[(SHARE, "*", "*")]
    assert (share["numerator"], share["denominator"]) == (2, 3)
    assert records[("sonco-share-ffpe", "*", "*")]["value"] == 0.5
    # Elements trimmed by _elements still reach the views: Procedure.performed, MedicationStatement.effective,
    # DiagnosticReport.result, Observation.component, ResearchSubject.individual.
    assert (records[("sonco-delay-reception-sequencing", "*", "*")]["count"], records[("sonco-delay-reception-sequencing", "*", "*")]["median"]) == (1, 30)
    assert records[("sonco-delay-rcp-aval-treatment", "*", "*")]["median"] == 5  # r1 10, r5 0
    actionable = records[("sonco-share-actionable-report", "*", "*")]
    assert (actionable["numerator"], actionable["denominator"]) == (1, 4)  # rep1 of rep1, rep2, rep5, rep7
    germline = records[("sonco-share-germline-oncogenetics", "*", "*")]
    assert (germline["numerator"], germline["denominator"]) == (1, 1)  # p2
    trial = records[("sonco-share-trial-inclusion", "*", "*")]
    assert (trial["numerator"], trial["denominator"]) == (1, 3)  # p1


@pytest.mark.server
def test_cli_html_on_server(loaded_server, monkeypatch, tmp_path):
    monkeypatch.setenv("SONCO_FHIR_URL", loaded_server)
    page = tmp_path / "report.html"

    result = CliRunner().invoke(build_app(), ["indicators", "--format", "html", "--lang", "en", "--no-store",
                                              "--period", "1996", "--suppression-threshold", "0", "--output", str(page)])

    assert result.exit_code == 0, result.output
    text = page.read_text(encoding="utf-8")
    assert "Delay distributions per lab" in text
    assert "1996-10" in text


@pytest.mark.server
def test_cli_rejects_bad_period(loaded_server, monkeypatch):
    monkeypatch.setenv("SONCO_FHIR_URL", loaded_server)

    result = CliRunner().invoke(build_app(), ["indicators", "--period", "1996-13", "--no-store"])

    assert result.exit_code == 2
    assert "1996-13" in result.output


@pytest.mark.server
def test_measure_reports_validate(loaded_server, monkeypatch):
    from test_profiles import errors_of, validation_issues

    monkeypatch.setenv("SONCO_FHIR_URL", loaded_server)
    result = CliRunner().invoke(build_app(), ["indicators", "--format", "csv", "--by", "lab,preindication,month",
                                              "--period", "1995..1996", "--suppression-threshold", "2"])
    assert result.exit_code == 0, result.output
    published = [row for row in csv.DictReader(io.StringIO(result.stdout))
                 if row["dimension"] == "*" and row["suppressed"] == "False" and row["value"] != ""]

    stored = requests.get(f"{loaded_server}/MeasureReport", params={"_count": 200}, headers={"Cache-Control": "no-cache"},
                          timeout=60).json()
    reports = [entry["resource"] for entry in stored.get("entry", []) if entry["resource"]["period"]["start"] == "1995-01-01"]
    assert len(reports) == len(published)
    assert len(reports) >= 20  # most overall cells of the 1995-1996 cohort have 2 patients or more
    for report in reports:
        errors = errors_of(validation_issues(loaded_server, report, "https://sonco.example/fhir/StructureDefinition/sonco-measurereport"))
        assert errors == [], f"{report['measure']}: {errors}"


@pytest.mark.server
def test_measures_validate(hapi):
    from test_profiles import errors_of, validation_issues

    for path in sorted(MEASURES_DIR.glob("Measure-*.json")):
        measure = json.loads(path.read_text(encoding="utf-8"))
        errors = errors_of(validation_issues(hapi, measure, "https://sonco.example/fhir/StructureDefinition/sonco-measure"))
        assert errors == [], f"{path.name}: {errors}"


def test_readme_mentions_options():
    readme = (REPOSITORY / "docs" / "indicators.md").read_text(encoding="utf-8")

    for option in ("--by", "--period", "--suppression-threshold", "--format"):
        assert option in readme
