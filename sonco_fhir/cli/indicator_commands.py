"""`sonco-fhir indicators`: compute the catalogue, print it (table, csv, json, html) and store it as MeasureReports."""

import csv
import io
import json
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from .. import i18n
from ..indicators import output

FORMATS = ("table", "csv", "json", "html")


def _table(run) -> Table:
    from ..indicators.catalogue import BY_ID

    t = i18n.t
    table = Table(title=t("indicators.title"))
    table.add_column(t("indicator.column.indicator"))
    table.add_column(t("indicator.column.dimension"))
    table.add_column(t("indicator.column.stratum"))
    table.add_column(t("indicator.column.value"), justify="right")
    table.add_column(t("indicator.column.detail"))
    for measure, cells in run.cells.items():
        indicator = BY_ID[measure]
        for index, cell in enumerate(cells):
            name = output.label(indicator) if index == 0 else ""
            table.add_row(name, output.dimension_label(cell["dimension"]), output.stratum_label(cell["stratum"]),
                          output.value_text(indicator, cell), output.detail_text(indicator, cell, run.threshold))
    return table


def _csv_text(records: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=output.RECORD_FIELDS, lineterminator="\n")
    writer.writeheader()
    for record in records:
        writer.writerow({name: "" if value is None else value for name, value in record.items()})
    return buffer.getvalue()


def register(app: typer.Typer) -> None:
    t = i18n.t

    @app.command("indicators", help=t("cmd.indicators"))
    def indicators(
        output_format: str = typer.Option("table", "--format", help=t("indicators.opt.format")),
        by: Optional[str] = typer.Option(None, "--by", help=t("indicators.opt.by")),
        period_text: Optional[str] = typer.Option(None, "--period", help=t("indicators.opt.period")),
        threshold_option: Optional[int] = typer.Option(None, "--suppression-threshold", help=t("indicators.opt.threshold")),
        output_path: Optional[Path] = typer.Option(None, "--output", "-o", help=t("indicators.opt.output")),
        lang: Optional[str] = typer.Option(None, "--lang", help=t("opt.lang")),
        store: bool = typer.Option(True, "--store/--no-store", help=t("opt.store")),
    ):
        from ..config import load_settings
        from ..errors import ConfigurationError, ServerError, SoncoError
        from ..indicators.html import render_html
        from ..indicators.run import run_indicators
        from ..indicators.strata import parse_dimensions, parse_period
        from ..indicators.suppress import threshold_from
        from ..loading.hapi import FhirServer
        from .main import err, fail, out

        if lang is not None:
            if lang not in i18n.LANGUAGES:
                raise typer.BadParameter(f"{lang} ({', '.join(i18n.LANGUAGES)})", param_hint="--lang")
            i18n.set_language(lang)
        if output_format not in FORMATS:
            raise typer.BadParameter(t("indicators.invalid_format", value=output_format), param_hint="--format")
        settings = load_settings()
        server = FhirServer(settings.fhir_url)
        try:
            dimensions = parse_dimensions(by)
            if output_format == "html":
                # The report's charts need the lab and month strata.
                dimensions += tuple(name for name in ("lab", "month") if name not in dimensions)
            period = parse_period(period_text)
            threshold = threshold_from(threshold_option)
            if output_path is not None and not output_path.parent.is_dir():
                raise ConfigurationError(t("output.folder_missing", path=output_path.parent))
            if not server.is_up():
                raise ServerError(t("server.unreachable", url=settings.fhir_url))
            run = run_indicators(server, store, dimensions, period, threshold)
        except SoncoError as error:
            fail(error)

        if output_format == "table":
            text = None
        elif output_format == "json":
            text = json.dumps(output.records(run.cells), indent=2, ensure_ascii=False) + "\n"
        elif output_format == "csv":
            text = _csv_text(output.records(run.cells))
        else:
            text = render_html(run)
        if text is None:
            out.print(_table(run))
        elif output_path:
            try:
                output_path.write_text(text, encoding="utf-8")
            except OSError as error:
                fail(ConfigurationError(t("output.unwritable", path=output_path, reason=error.strerror)))
            err.print(t("indicators.written", path=output_path))
        else:
            print(text, end="")
        if store:
            err.print(t("indicators.stored", count=len(run.reports)))
