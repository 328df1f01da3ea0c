"""Compute the indicators in SQL. ViewDefinitions flatten the FHIR resources into DuckDB tables, and SQL queries read them.

Each `views/*.json` ViewDefinition becomes one table named after the view,
and each `queries/*.sql` file gives one indicator, keyed by its file name.
Dates stay text in the tables and are converted in SQL by `paris_date`.
"""

import json
import re
from pathlib import Path

import duckdb

from ..views import column_names, run_view

VIEWS_DIR = Path(__file__).parent / "views"
QUERIES_DIR = Path(__file__).parent / "queries"
TABLE_NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]*$")

# DuckDB type of each FHIR type the views declare. Dates and instants stay
# text because FHIR allows partial dates ("2024", "2024-03") that no SQL date type holds.
COLUMN_TYPES = {
    "string": "VARCHAR",
    "code": "VARCHAR",
    "id": "VARCHAR",
    "uri": "VARCHAR",
    "date": "VARCHAR",
    "dateTime": "VARCHAR",
    "instant": "VARCHAR",
}

# The calendar day of a FHIR date, dateTime or instant in Europe/Paris, as in
# sonco_fhir.indicators.compute.paris_date. An instant with an offset is
# converted to Paris time first. A date, or a dateTime without an offset, is
# taken as written. A value known only to the year or month gives NULL.
# AT TIME ZONE on a TIMESTAMPTZ needs DuckDB's ICU extension, which the
# duckdb Python wheel ships built in (checked with duckdb 2.0.1, no network).
PARIS_DATE_MACRO = """
CREATE MACRO paris_date(value) AS CASE
    WHEN value IS NULL OR length(value) < 10 THEN NULL
    WHEN length(value) = 10 THEN CAST(value AS DATE)
    WHEN regexp_matches(value, '(Z|[+-][0-9]{2}:[0-9]{2})$')
        THEN CAST(CAST(value AS TIMESTAMPTZ) AT TIME ZONE 'Europe/Paris' AS DATE)
    ELSE CAST(left(value, 10) AS DATE)
END
"""


def load_view_definitions() -> list[dict]:
    """Read the ViewDefinitions of `views/`, sorted by file name."""
    return [json.loads(path.read_text(encoding="utf-8")) for path in sorted(VIEWS_DIR.glob("*.json"))]


def load_views(resources_by_type: dict[str, list[dict]]) -> duckdb.DuckDBPyConnection:
    """Run every ViewDefinition over the resources and store each view's rows in an in-memory DuckDB table.

    `resources_by_type` maps a resource type ("ServiceRequest") to its
    resources as parsed JSON. A type with no entry gives an empty table.
    """
    connection = duckdb.connect(":memory:")
    connection.execute(PARIS_DATE_MACRO)
    for view in load_view_definitions():
        _create_table(connection, view)
        rows = run_view(view, resources_by_type.get(view["resource"], []))
        if rows:
            names = column_names(view)
            placeholders = ", ".join("?" for _ in names)
            # NOTE: executemany inserts row by row, so a cohort of many thousand resources may need a bulk load instead.
            connection.executemany(
                f"INSERT INTO {view['name']} VALUES ({placeholders})",
                [[row[name] for name in names] for row in rows],
            )
    return connection


def compute(connection: duckdb.DuckDBPyConnection) -> dict[str, dict[str, dict]]:
    """Run each `queries/*.sql` file on the view tables.

    Returns {query file stem: {stratum: {column: value}}}. Every query
    returns a `stratum` column, the lab or "*" for all labs.
    """
    results: dict[str, dict[str, dict]] = {}
    for path in sorted(QUERIES_DIR.glob("*.sql")):
        cursor = connection.execute(path.read_text(encoding="utf-8"))
        names = [description[0] for description in cursor.description]
        by_stratum = {}
        for values in cursor.fetchall():
            row = dict(zip(names, values))
            by_stratum[row.pop("stratum")] = row
        results[path.stem] = by_stratum
    return results


def _create_table(connection: duckdb.DuckDBPyConnection, view: dict) -> None:
    name = view.get("name", "")
    if not TABLE_NAME_PATTERN.match(name):
        raise ValueError(f"ViewDefinition name {name!r} is not a lower-case SQL table name. Rename it, for example to service_request")
    definitions = []
    for column in _columns(view["select"]):
        fhir_type = column.get("type")
        if fhir_type not in COLUMN_TYPES:
            raise ValueError(
                f"view {name}, column {column['name']}: type {fhir_type!r} has no DuckDB type. "
                f"Declare one of {', '.join(sorted(COLUMN_TYPES))} or add it to COLUMN_TYPES"
            )
        definitions.append(f"{column['name']} {COLUMN_TYPES[fhir_type]}")
    connection.execute(f"CREATE TABLE {name} ({', '.join(definitions)})")


def _columns(selections: list[dict]) -> list[dict]:
    """Return the column definitions in the order of column_names(): own columns, nested select, then the first unionAll branch."""
    columns = []
    for selection in selections:
        columns.extend(selection.get("column", []))
        columns.extend(_columns(selection.get("select", [])))
        columns.extend(_columns(selection.get("unionAll", [])[:1]))
    return columns
