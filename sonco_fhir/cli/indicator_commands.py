"""`sonco-fhir indicators`: compute, print (table, csv, json) and store as MeasureReports."""

import csv
import json
import sys

import typer
from rich.table import Table

from .. import i18n
from ..indicators.compute import ALL
from ..indicators.report import DELAY_MEASURE


def _label(row) -> str:
    return i18n.t(f"indicator.{row.measure}")


def _localized_number(text: str) -> str:
    # French writes a decimal comma.
    return text.replace(".", ",") if i18n.language() == "fr" else text


def _value_text(row) -> str:
    if row.value is None:
        return "—"
    if row.measure == DELAY_MEASURE:
        text = i18n.t("indicator.days", value=f"{row.value:g}")
    else:
        text = i18n.t("indicator.percent", value=f"{row.value * 100:.1f}")
    return _localized_number(text)


def _detail_text(row) -> str:
    if row.measure != DELAY_MEASURE:
        return i18n.t("indicator.share_detail", numerator=row.numerator, denominator=row.denominator)
    text = i18n.t("indicator.delay_detail", count=row.denominator, excluded=row.excluded)
    if row.p25 is None:
        return text
    spread = i18n.t("indicator.delay_spread", p25=f"{row.p25:g}", p75=f"{row.p75:g}", p90=f"{row.p90:g}")
    return f"{text}, {_localized_number(spread)}"


def _optional(value) -> object:
    return "" if value is None else value


def register(app: typer.Typer) -> None:
    t = i18n.t

    @app.command("indicators", help=t("cmd.indicators"))
    def indicators(
        output_format: str = typer.Option("table", "--format", help=t("opt.format")),
        store: bool = typer.Option(True, "--store/--no-store", help=t("opt.store")),
    ):
        from ..config import load_settings
        from ..errors import ServerError, SoncoError
        from ..indicators.run import run_indicators
        from ..loading.hapi import FhirServer
        from .main import err, fail, out

        if output_format not in ("table", "csv", "json"):
            raise typer.BadParameter(output_format, param_hint="--format")
        settings = load_settings()
        server = FhirServer(settings.fhir_url)
        try:
            if not server.is_up():
                raise ServerError(t("server.unreachable", url=settings.fhir_url))
            rows, reports = run_indicators(server, store)
        except SoncoError as error:
            fail(error)

        if output_format == "json":
            print(json.dumps([{"indicator": r.measure, "label": _label(r), "lab": r.stratum, "value": r.value,
                               "numerator": r.numerator, "denominator": r.denominator, "excluded": r.excluded,
                               "p25": r.p25, "p75": r.p75, "p90": r.p90}
                              for r in rows], indent=2, ensure_ascii=False))
        elif output_format == "csv":
            writer = csv.writer(sys.stdout)
            writer.writerow(["indicator", "label", "lab", "value", "numerator", "denominator", "excluded", "p25", "p75", "p90"])
            for r in rows:
                writer.writerow([r.measure, _label(r), r.stratum, _optional(r.value), _optional(r.numerator),
                                 r.denominator, r.excluded, _optional(r.p25), _optional(r.p75), _optional(r.p90)])
        else:
            table = Table(title=t("indicators.title"))
            table.add_column(t("indicator.column.indicator"))
            table.add_column(t("indicator.column.lab"))
            table.add_column(t("indicator.column.value"), justify="right")
            table.add_column(t("indicator.column.detail"))
            for r in rows:
                lab = t("indicator.all_labs") if r.stratum == ALL else r.stratum
                table.add_row(_label(r), lab, _value_text(r), _detail_text(r))
            out.print(table)
        if store:
            err.print(t("indicators.stored", count=len(reports)))
