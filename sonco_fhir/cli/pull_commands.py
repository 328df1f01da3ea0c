"""`sonco-fhir pull fhir --source NAME`: pull the cohort's data from a hospital FHIR server."""

from pathlib import Path
from typing import Optional

import typer

from .. import i18n
from ..errors import ExitCode, SoncoError


def register(app: typer.Typer) -> None:
    t = i18n.t
    pull_app = typer.Typer(help=t("cmd.pull"), no_args_is_help=True)
    app.add_typer(pull_app, name="pull")

    @pull_app.command("fhir", help=t("cmd.pull_fhir"))
    def pull_fhir(
        source_name: str = typer.Option(..., "--source", help=t("opt.pull_source")),
        identifiers: Optional[Path] = typer.Option(None, "--identifiers", help=t("opt.pull_identifiers")),
        full: bool = typer.Option(False, "--full", help=t("opt.pull_full")),
    ):
        from ..config import load_settings
        from ..connectors.fhir_rest import pull, with_identifiers
        from ..connectors.fhir_sources import load_source
        from ..loading.hapi import FhirServer
        from ..pipeline import build_engine
        from .main import err, fail, print_summary

        settings = load_settings()
        try:
            source = with_identifiers(load_source(source_name), identifiers)
            described = ", ".join(f"{name}={value}" for name, value in settings.describe().items())
            err.print(t("settings.line", values=described), markup=False)
            err.print(t("pull.source_line", name=source.name, url=source.base_url, auth=source.auth.type,
                        types=", ".join(source.resource_types) or "files.resource_types", schedule=source.schedule or "-"), markup=False)
            server = FhirServer(settings.fhir_url)
            if not server.is_up():
                from ..errors import ServerError

                raise ServerError(t("server.unreachable", url=settings.fhir_url))
            engine = build_engine(settings, read_only=False)
            report = pull(source, settings, engine, server, full=full)
        except SoncoError as error:
            fail(error)

        print_report(report, err)
        print_summary(report.run, mapped_only=False)
        if report.run.records_read and report.run.exit_code != ExitCode.OK:
            raise typer.Exit(int(report.run.exit_code))


def print_report(report, console) -> None:
    t = i18n.t
    if report.bulk_fallback_status is not None:
        console.print(t("pull.bulk_fallback", source=report.source, status=report.bulk_fallback_status), markup=False)
    if report.resumed:
        console.print(t("pull.resumed", done=report.patients_already_done), markup=False)
    console.print(
        t("pull.report", mode=t(f"pull.mode.{report.mode}"), patients=report.patients, fetched=report.resources_fetched,
          not_found=report.identifiers_not_found, ambiguous=report.identifiers_ambiguous, retries=report.retries),
        markup=False,
    )
    if report.deleted:
        console.print(t("pull.deleted", count=len(report.deleted)), markup=False)
        for key in report.deleted:
            console.print(f"  - {_masked(key)}", markup=False)
    if report.deletion_check_failed:
        console.print(t("pull.deletion_check_failed"), markup=False)
    if report.untranslated:
        console.print(t("pull.untranslated", count=len(report.untranslated)), markup=False)
        for (table, code), count in sorted(report.untranslated.items()):
            console.print(f"  - {table}: {code} ({count})", markup=False)


def _masked(key: str) -> str:
    """Return a source key without the id of a Patient, which some EHRs make the IPP."""
    system, separator, reference = key.rpartition("|")
    if reference.startswith("Patient/"):
        return f"{system}{separator}Patient/…"
    return key
