"""Entry point of the `sonco-fhir` command.

The language is read from the command line before the commands are built,
so that help text is translated as well as messages.
"""

import logging
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from .. import i18n
from ..errors import ExitCode, SoncoError

err = Console(stderr=True, highlight=False, soft_wrap=True)
# Tables keep their lines whole when the output is a file or a pipe, where rich would assume 80 columns.
out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 140)


def fail(error: SoncoError) -> None:
    err.print(f"[bold red]{i18n.t('error.prefix')}[/] : {error}" if i18n.language() == "fr" else f"[bold red]{i18n.t('error.prefix')}[/]: {error}")
    raise typer.Exit(int(error.exit_code))


def print_summary(summary, mapped_only: bool) -> None:
    if summary.problems:
        err.print(i18n.t("run.problems", count=len(summary.problems)))
        for problem in summary.problems:
            err.print(f"  - {problem.render()}", markup=False)
    key = "run.summary_map" if mapped_only else "run.summary"
    err.print(
        i18n.t(key, read=summary.records_read, ok=summary.records_mapped, loaded=summary.records_loaded,
               rejected=summary.records_rejected, resources=summary.resources)
    )


def build_app() -> typer.Typer:
    t = i18n.t
    app = typer.Typer(help=t("app.help"), no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)

    @app.callback()
    def main(lang: str = typer.Option(i18n.language(), "--lang", help=t("opt.lang"))):
        if lang not in i18n.LANGUAGES:
            raise typer.BadParameter(f"{lang} ({', '.join(i18n.LANGUAGES)})", param_hint="--lang")
        i18n.set_language(lang)
        logging.basicConfig(level=logging.WARNING, format="%(message)s")

    @app.command("map", help=t("cmd.map"))
    def map_command(
        kind: str = typer.Argument(..., help=t("arg.kind")),
        paths: list[Path] = typer.Argument(..., help=t("arg.paths")),
        output: Optional[Path] = typer.Option(None, "--output", "-o", help=t("opt.output")),
    ):
        from ..config import load_settings
        from ..loading.bundle import to_json
        from ..pipeline import build_engine, map_source, merged_bundle

        settings = load_settings()
        try:
            engine = build_engine(settings, read_only=True)
            mapped, summary = map_source(kind, paths, settings, engine)
        except SoncoError as error:
            fail(error)
        bundle = merged_bundle(mapped)
        summary.resources = len(bundle["entry"])
        text = to_json(bundle, indent=2)
        if output:
            output.write_text(text + "\n", encoding="utf-8")
            err.print(t("run.written", path=output))
        else:
            print(text)
        print_summary(summary, mapped_only=True)
        if summary.exit_code != ExitCode.OK:
            raise typer.Exit(int(summary.exit_code))

    @app.command("ingest", help=t("cmd.ingest"))
    def ingest_command(
        kind: str = typer.Argument(..., help=t("arg.kind")),
        paths: list[Path] = typer.Argument(..., help=t("arg.paths")),
    ):
        from ..config import load_settings
        from ..loading.hapi import FhirServer
        from ..pipeline import build_engine, check_kind, load_records, map_source

        settings = load_settings()
        described = ", ".join(f"{name}={value}" for name, value in settings.describe().items())
        err.print(t("settings.line", values=described), markup=False)
        try:
            check_kind(kind)
            server = FhirServer(settings.fhir_url)
            if not server.is_up():
                from ..errors import ServerError

                raise ServerError(t("server.unreachable", url=settings.fhir_url))
            engine = build_engine(settings, read_only=False)
            mapped, summary = map_source(kind, paths, settings, engine)
            load_records(mapped, server, summary)
        except SoncoError as error:
            fail(error)
        print_summary(summary, mapped_only=False)
        if summary.exit_code != ExitCode.OK:
            raise typer.Exit(int(summary.exit_code))

    key_app = typer.Typer(help=t("cmd.key"), no_args_is_help=True)
    app.add_typer(key_app, name="key")

    @key_app.command("init", help=t("cmd.key"))
    def key_init():
        from ..config import load_settings
        from ..privacy.pseudonym import generate_key_file

        settings = load_settings()
        if settings.key_file.exists():
            err.print(t("key.exists", path=settings.key_file))
            return
        generate_key_file(settings.key_file)
        err.print(t("key.created", path=settings.key_file))

    from .server_commands import register as register_server
    from .indicator_commands import register as register_indicators

    from .listen_commands import register as register_listen
    from .errors_commands import register as register_errors
    from .view_commands import register as register_views
    from .pull_commands import register as register_pull
    from .poll_commands import register as register_poll

    register_server(app)
    register_indicators(app)
    register_views(app)
    register_listen(app)
    register_errors(app)
    register_pull(app)
    register_poll(app)
    return app


def run() -> None:
    i18n.set_language(i18n.detect_language())
    app = build_app()
    app(prog_name="sonco-fhir")


if __name__ == "__main__":
    sys.exit(run())
