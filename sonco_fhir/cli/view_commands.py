"""`sonco-fhir view run`: flatten FHIR resources with a SQL-on-FHIR v2 ViewDefinition and print the rows."""

import csv
import json
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import typer

from .. import i18n
from ..errors import ExitCode, SoncoError

OUTPUT_FORMATS = ("csv", "json")


def message(key: str, **values) -> str:
    return i18n.t(key, **values)


def register(app: typer.Typer) -> None:
    view_app = typer.Typer(help=message("cmd.view"), no_args_is_help=True)
    app.add_typer(view_app, name="view")

    @view_app.command("run", help=message("cmd.view_run"))
    def run_command(
        view_path: Path = typer.Argument(..., metavar="VIEW.json", help=message("arg.view")),
        inputs: list[Path] = typer.Argument(..., metavar="INPUT...", help=message("arg.inputs")),
        output_format: str = typer.Option("csv", "--format", help=message("opt.view_format")),
    ):
        from ..views import ViewDefinitionError, column_names, run_view
        from .main import err, fail

        if output_format not in OUTPUT_FORMATS:
            raise typer.BadParameter(f"{output_format} ({', '.join(OUTPUT_FORMATS)})", param_hint="--format")
        try:
            view = _read_json_document(view_path)
            resources = [resource for path in inputs for resource in read_resources(path)]
            try:
                rows = run_view(view, resources)
            except ViewDefinitionError as error:
                raise SoncoError(message("view.invalid_view", path=view_path, reason=error)) from error
        except SoncoError as error:
            fail(error)

        if output_format == "csv":
            write_csv(column_names(view), rows)
        else:
            json.dump(rows, sys.stdout, indent=2, ensure_ascii=False, default=_json_default)
            sys.stdout.write("\n")
        err.print(message("view.rows", count=len(rows), resources=len(resources)))


def read_resources(path: Path) -> Iterator[dict]:
    """Yield the FHIR resources of an NDJSON file, a JSON Bundle (its entries), a JSON array or one JSON resource."""
    text = _read_text(path)
    stripped = text.lstrip()
    if path.suffix.lower() == ".ndjson" or (stripped.startswith("{") and "\n{" in stripped.rstrip()):
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                yield _parse_json(line, path, message("view.line", line=number))
        return

    document = _parse_json(text, path, message("view.document"))
    if isinstance(document, list):
        yield from document
    elif isinstance(document, dict) and document.get("resourceType") == "Bundle":
        for entry in document.get("entry", []):
            if isinstance(entry, dict) and isinstance(entry.get("resource"), dict):
                yield entry["resource"]
    else:
        yield document


def write_csv(names: list[str], rows: list[dict]) -> None:
    """Write rows as CSV with a header row. Null is an empty field, booleans are true/false, lists and objects are JSON."""
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(names)
    for row in rows:
        writer.writerow([_csv_field(row.get(name)) for name in names])


def _csv_field(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, dict)):
        return json.dumps(value, ensure_ascii=False, default=_json_default)
    return str(value)


def _json_default(value):
    # NOTE: decimals are written as JSON numbers through float, which can round digits beyond about 15 significant ones.
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise SoncoError(message("view.file_unreadable", path=path, reason=error), ExitCode.INPUT_UNREADABLE) from error


def _read_json_document(path: Path):
    return _parse_json(_read_text(path), path, message("view.document"))


def _parse_json(text: str, path: Path, location: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise SoncoError(
            message("view.invalid_json", path=path, location=location, reason=error), ExitCode.INPUT_UNREADABLE
        ) from error
