"""Building blocks of the indicators engine: day counting, the CQM median example, --period and --by parsing, small-cell suppression."""

import pytest

from sonco_fhir.errors import SoncoError
from sonco_fhir.indicators.catalogue import BY_ID
from sonco_fhir.indicators.sql import PARIS_DATE_MACRO, aggregate, load_views
from sonco_fhir.indicators.strata import parse_dimensions, parse_period
from sonco_fhir.indicators.suppress import suppress, threshold_from
from test_indicator_sql import by_type, genomic_report, service_request

DELAY = "sonco-delay-prescription-report"


def test_cqm_median_example():
    # The CQM continuous-variable example: observations 0, 0, 1, 2, 3 have a median of 1.
    resources = [service_request(f"r{i}", f"p{i}", "2024-01-10", "SeqOIA") for i in range(5)]
    resources += [genomic_report(f"d{i}", f"p{i}", f"2024-01-{10 + days}T12:00:00+01:00", f"r{i}")
                  for i, days in enumerate([0, 0, 1, 2, 3])]

    cell = aggregate(load_views(by_type(resources)), BY_ID[DELAY])[0]

    assert cell["count"] == 5
    assert cell["median"] == 1
    assert cell["p25"] == 0
    assert cell["p75"] == 2


@pytest.mark.parametrize(
    ("value", "day"),
    [
        ("2024-10-27", "2024-10-27"),  # date only: taken as written
        ("2024-10-26T22:30:00Z", "2024-10-27"),  # 00:30 summer time
        ("2024-10-27T23:30:00Z", "2024-10-28"),  # 00:30 winter time, after the change of 27 October
        ("2024-03-31T00:30:00Z", "2024-03-31"),  # 01:30 winter time, before the change of 31 March at 02:00
        ("2024-03-31T23:30:00Z", "2024-04-01"),  # 01:30 summer time
        ("2024-01-31T23:30:00Z", "2024-02-01"),
        ("2024-04-01T01:00:00-05:00", "2024-04-01"),  # 08:00 in Paris
        ("2024-04-01T08:00:00", "2024-04-01"),  # no offset: taken as written
        ("2024-05", None),  # known to the month only
        ("2024", None),
        (None, None),
    ],
)
def test_paris_date_macro(value, day):
    import duckdb

    connection = duckdb.connect(":memory:")
    connection.execute(PARIS_DATE_MACRO)

    result = connection.execute("SELECT CAST(paris_date(CAST(? AS VARCHAR)) AS VARCHAR)", [value]).fetchone()[0]

    assert result == day


@pytest.mark.parametrize(
    ("text", "start", "end"),
    [
        ("2024", "2024-01-01", "2024-12-31"),
        ("2024-Q1", "2024-01-01", "2024-03-31"),
        ("2024-Q4", "2024-10-01", "2024-12-31"),
        ("2024-02", "2024-02-01", "2024-02-29"),
        ("2023-02", "2023-02-01", "2023-02-28"),
        ("2024-03-15", "2024-03-15", "2024-03-15"),
        ("2024-01..2024-06", "2024-01-01", "2024-06-30"),
        ("2023..2024-Q1", "2023-01-01", "2024-03-31"),
    ],
)
def test_period_forms(text, start, end):
    period = parse_period(text)

    assert (period.start.isoformat(), period.end.isoformat()) == (start, end)


@pytest.mark.parametrize("text", ["24", "2024-13", "2024-Q5", "2024-02-30", "last year", "2024-06..2024-01"])
def test_period_invalid(text):
    with pytest.raises(SoncoError) as raised:
        parse_period(text)

    assert text in str(raised.value)


def test_dimensions_parsed_in_order():
    assert parse_dimensions(None) == ("lab",)
    assert parse_dimensions("month, lab,month") == ("month", "lab")


def test_dimension_unknown_named():
    with pytest.raises(SoncoError) as raised:
        parse_dimensions("lab,platform")

    assert "platform" in str(raised.value)
    assert "preindication" in str(raised.value)


def test_threshold_sources(monkeypatch):
    monkeypatch.delenv("SONCO_SUPPRESSION_THRESHOLD", raising=False)
    assert threshold_from(None) == 10
    monkeypatch.setenv("SONCO_SUPPRESSION_THRESHOLD", "5")
    assert threshold_from(None) == 5
    assert threshold_from(3) == 3
    monkeypatch.setenv("SONCO_SUPPRESSION_THRESHOLD", "five")
    with pytest.raises(SoncoError) as raised:
        threshold_from(None)
    assert "five" in str(raised.value)
    assert "SONCO_SUPPRESSION_THRESHOLD" in str(raised.value)


def cell(dimension, stratum, patients):
    return {"dimension": dimension, "stratum": stratum, "patients": patients, "numerator": patients, "denominator": patients}


def hidden_strata(cells):
    return {(item["dimension"], item["stratum"]) for item in cells if item["suppressed"]}


def test_suppression_primary_and_complementary():
    cells = [cell("*", "*", 30), cell("lab", "AURAGEN", 4), cell("lab", "SeqOIA", 26),
             cell("month", "2024-01", 12), cell("month", "2024-02", 11), cell("month", "2024-03", 3), cell("month", "2024-04", 4)]

    result = suppress(cells, 10)

    # AURAGEN (4) is below 10; SeqOIA would give it as 30 - 26, so it goes too. Two months are below 10: nothing more.
    assert hidden_strata(result) == {("lab", "AURAGEN"), ("lab", "SeqOIA"), ("month", "2024-03"), ("month", "2024-04")}
    assert result[1]["numerator"] is None
    assert result[1]["patients"] is None
    assert result[0]["numerator"] == 30


def test_suppression_complement_smallest_published():
    cells = [cell("*", "*", 60), cell("month", "2024-01", 25), cell("month", "2024-02", 2),
             cell("month", "2024-03", 15), cell("month", "2024-04", 18)]

    assert hidden_strata(suppress(cells, 10)) == {("month", "2024-02"), ("month", "2024-03")}


def test_suppression_overall_hides_all():
    cells = [cell("*", "*", 8), cell("lab", "AURAGEN", 8), cell("lab", "SeqOIA", 0)]

    result = suppress(cells, 10)

    assert all(item["suppressed"] for item in result)


def test_suppression_keeps_empty_and_threshold_cells():
    cells = [cell("*", "*", 20), cell("lab", "AURAGEN", 10), cell("lab", "SeqOIA", 10), cell("lab", "?", 0)]

    result = suppress(cells, 10)

    assert hidden_strata(result) == set()
    assert [item["suppressed"] for item in suppress(cells, 0)] == [False] * 4
