"""Compute the indicators in SQL. ViewDefinitions flatten the FHIR resources into DuckDB tables, and SQL queries read them.

Each `views/*.json` ViewDefinition becomes one table named after the view
(run by fastview.run_fast_columns, which gives the rows of sonco_fhir.views.run_view faster,
column by column, loaded through an Arrow table).
`queries/request_milestone.sql` then builds one row per prescription with
the day of each milestone and its strata, and each indicator of the
catalogue is the query `queries/<indicator.query>.sql`, which returns one
row per population member: `unit`, `request`, `patient` and either `value`
(a number, NULL when a milestone is missing) or `hit` (a boolean). The
statistics per stratum are computed by `aggregate`, the same for every
indicator of a kind.
"""

import gc
import json
import re
import tempfile
from pathlib import Path

import duckdb
import pyarrow

from ..views import column_names
from .catalogue import CATALOGUE, Indicator
from .fastview import run_fast_columns
from .strata import DIMENSIONS, Period

VIEWS_DIR = Path(__file__).parent / "views"
QUERIES_DIR = Path(__file__).parent / "queries"
MILESTONE_QUERY = QUERIES_DIR / "request_milestone.sql"
TABLE_NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]*$")
OVERALL = "*"

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

# The calendar day of a FHIR date, dateTime or instant in Europe/Paris. An
# instant with an offset is converted to Paris time first. A date, or a
# dateTime without an offset, is taken as written. A value known only to the
# year or month gives NULL.
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
    """Run every ViewDefinition over the resources, store each view's rows in an in-memory DuckDB table, and build request_milestone.

    `resources_by_type` maps a resource type ("ServiceRequest") to its
    resources as parsed JSON. A type with no entry gives an empty table.
    """
    connection = duckdb.connect(":memory:")
    connection.execute(PARIS_DATE_MACRO)
    # Flattening allocates a tuple per row and many short-lived lists, which
    # trigger full collections of Python's cycle collector over every fetched
    # resource: about 0.5 s of CPU for the 10,000-patient benchmark cohort.
    # The rows contain no reference cycles, so the collector is paused meanwhile.
    collecting = gc.isenabled()
    gc.disable()
    try:
        with tempfile.TemporaryDirectory(prefix="sonco-views-") as folder:
            for view in load_view_definitions():
                _load_view(connection, view, resources_by_type.get(view["resource"], []), Path(folder))
    finally:
        if collecting:
            gc.enable()
    connection.execute(MILESTONE_QUERY.read_text(encoding="utf-8"))
    return connection


def _load_view(connection: duckdb.DuckDBPyConnection, view: dict, resources: list[dict], folder: Path) -> None:
    """Create the table of one view and insert its rows."""
    columns = _create_table(connection, view)
    names, values = run_fast_columns(view, resources)
    if not values or not values[0]:
        return
    if not _arrow_insert(connection, view["name"], columns, dict(zip(names, values))):
        rows = [dict(zip(names, row)) for row in zip(*values)]
        _bulk_insert(connection, view["name"], columns, rows, folder / f"{view['name']}.ndjson")


def indicator_rows(connection: duckdb.DuckDBPyConnection, indicator: Indicator) -> list[dict]:
    """Return the population members of one indicator, as its query gives them."""
    cursor = connection.execute(_query_text(indicator))
    names = [description[0] for description in cursor.description]
    return [dict(zip(names, values)) for values in cursor.fetchall()]


def aggregate(
    connection: duckdb.DuckDBPyConnection,
    indicator: Indicator,
    dimensions: tuple[str, ...] = (),
    period: Period | None = None,
) -> list[dict]:
    """Compute one indicator overall and per stratum of each dimension.

    Returns one dict per cell with `dimension` ("*" for the overall cell)
    and `stratum` ("*" overall), `patients` (distinct patients), and for a
    continuous indicator `count`, `excluded`, `median`, `p25`, `p75`, `p90`,
    for a share `numerator` and `denominator`. The overall cell comes first,
    then the dimensions in the given order, strata sorted.
    Percentiles use quantile_cont (linear interpolation between the two
    nearest values), so the median of an even count is the mean of the two
    middle values.
    """
    strata = [f"{DIMENSIONS[name]} AS {name}" for name in dimensions]
    where = f"WHERE {period.sql_condition('m.prescribed_day')}" if period else ""
    if dimensions:
        dimension_column = "CASE " + " ".join(f"WHEN grouping({name}) = 0 THEN '{name}'" for name in dimensions) + f" ELSE '{OVERALL}' END"
        stratum_column = "CASE " + " ".join(f"WHEN grouping({name}) = 0 THEN {name}" for name in dimensions) + f" ELSE '{OVERALL}' END"
    else:
        dimension_column = stratum_column = f"'{OVERALL}'"
    grouping_sets = ", ".join(["()", *(f"({name})" for name in dimensions)])
    if indicator.continuous:
        statistics = """
            count(DISTINCT unit) FILTER (WHERE value IS NOT NULL) AS count,
            count(DISTINCT unit) FILTER (WHERE value IS NULL) AS excluded,
            median(value) AS median,
            quantile_cont(value, 0.25) AS p25,
            quantile_cont(value, 0.75) AS p75,
            quantile_cont(value, 0.9) AS p90"""
        measured = "i.value"
    else:
        statistics = """
            count(DISTINCT unit) FILTER (WHERE hit) AS numerator,
            count(DISTINCT unit) AS denominator"""
        measured = "i.hit"
    sql = f"""
        WITH member AS (
            SELECT i.unit, i.patient, {measured}{''.join(', ' + stratum for stratum in strata)}
            FROM ({_query_text(indicator)}) AS i
            JOIN request_milestone AS m ON m.request = i.request
            {where}
        )
        SELECT
            {dimension_column} AS dimension,
            {stratum_column} AS stratum,
            count(DISTINCT patient) AS patients,
            {statistics}
        FROM member
        GROUP BY GROUPING SETS ({grouping_sets})
    """
    cursor = connection.execute(sql)
    names = [description[0] for description in cursor.description]
    cells = [dict(zip(names, values)) for values in cursor.fetchall()]
    if not any(cell["dimension"] == OVERALL for cell in cells):
        cells.append(_empty_cell(indicator))
    order = {name: index for index, name in enumerate((OVERALL, *dimensions))}
    cells.sort(key=lambda cell: (order[cell["dimension"]], cell["stratum"]))
    for cell in cells:
        for name in ("median", "p25", "p75", "p90"):
            if cell.get(name) is not None:
                cell[name] = float(cell[name])
    return cells


def compute(
    connection: duckdb.DuckDBPyConnection,
    dimensions: tuple[str, ...] = (),
    period: Period | None = None,
    indicators: tuple[Indicator, ...] = CATALOGUE,
) -> dict[str, list[dict]]:
    """Aggregate every indicator of the catalogue. Returns {Measure id: cells} (see `aggregate`)."""
    return {indicator.id: aggregate(connection, indicator, dimensions, period) for indicator in indicators}


def _empty_cell(indicator: Indicator) -> dict:
    cell = {"dimension": OVERALL, "stratum": OVERALL, "patients": 0}
    if indicator.continuous:
        cell.update(count=0, excluded=0, median=None, p25=None, p75=None, p90=None)
    else:
        cell.update(numerator=0, denominator=0)
    return cell


def _query_text(indicator: Indicator) -> str:
    return (QUERIES_DIR / f"{indicator.query}.sql").read_text(encoding="utf-8").strip().rstrip(";")


def _create_table(connection: duckdb.DuckDBPyConnection, view: dict) -> dict[str, str]:
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
    return {column["name"]: COLUMN_TYPES[column["type"]] for column in _columns(view["select"])}


def _arrow_insert(connection: duckdb.DuckDBPyConnection, table: str, columns: dict[str, str], values: dict[str, list]) -> bool:
    """Insert the rows, given as one list of values per column name, through an Arrow table.

    This is about twice as fast as _bulk_insert for the benchmark cohort.
    It takes only text columns that contain text or None. For any other
    column type or value (a number in a text column, for example) it inserts
    nothing and returns False, and _bulk_insert then converts the rows as before.
    """
    if any(sql_type != "VARCHAR" for sql_type in columns.values()):
        return False
    try:
        arrow_rows = pyarrow.table({name: pyarrow.array(values[name], pyarrow.string()) for name in columns})
    except pyarrow.ArrowTypeError:
        return False
    connection.register("arrow_rows", arrow_rows)
    try:
        connection.execute(f"INSERT INTO {table} SELECT * FROM arrow_rows")
    finally:
        connection.unregister("arrow_rows")
    return True


def _bulk_insert(connection: duckdb.DuckDBPyConnection, table: str, columns: dict[str, str], rows: list[dict], path: Path) -> None:
    """Insert the rows through an NDJSON file read by DuckDB, which converts JSON numbers and booleans for text columns."""
    with path.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False))
            handle.write("\n")
    column_types = ", ".join(f"'{name}': '{sql_type}'" for name, sql_type in columns.items())
    connection.execute(f"INSERT INTO {table} SELECT * FROM read_json(?, format = 'newline_delimited', columns = {{{column_types}}})",
                       [str(path)])


def _columns(selections: list[dict]) -> list[dict]:
    """Return the column definitions in the order of column_names(): own columns, nested select, then the first unionAll branch."""
    columns = []
    for selection in selections:
        columns.extend(selection.get("column", []))
        columns.extend(_columns(selection.get("select", [])))
        columns.extend(_columns(selection.get("unionAll", [])[:1]))
    return columns
