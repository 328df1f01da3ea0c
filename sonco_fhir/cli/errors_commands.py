"""`sonco-fhir errors`: list, show and replay the stored HL7 v2 messages that could not be loaded."""

import sqlite3
from typing import Optional

import typer

from ..i18n import t


def register(app: typer.Typer) -> None:
    errors_app = typer.Typer(help=t("cmd.errors"), no_args_is_help=True)
    app.add_typer(errors_app, name="errors")

    @errors_app.command("list", help=t("cmd.errors.list"))
    def list_command():
        from rich.table import Table

        from .main import err, out

        with _open_store() as store:
            rows = store.errors()
        if not rows:
            err.print(t("errors.none"))
            return
        table = Table()
        for column in ("errors.col.id", "errors.col.received", "errors.col.application", "errors.col.facility",
                       "errors.col.control_id", "errors.col.reason", "errors.col.location"):
            table.add_column(t(column))
        for row in rows:
            table.add_row(str(row.id), row.received_at, row.sending_application, row.sending_facility,
                          row.control_id, row.last_error or "", row.error_location or "")
        out.print(table)

    @errors_app.command("show", help=t("cmd.errors.show"))
    def show_command(
        message_id: int = typer.Argument(..., metavar="ID", help=t("arg.errors.id")),
        raw: bool = typer.Option(False, "--raw", help=t("opt.errors.raw")),
    ):
        from .main import out

        with _open_store() as store:
            message = _get(store, message_id)
        lines = [
            (t("errors.col.id"), str(message.id)),
            (t("errors.col.status"), message.status),
            (t("errors.col.received"), message.received_at),
            (t("errors.col.application"), message.sending_application),
            (t("errors.col.facility"), message.sending_facility),
            (t("errors.col.control_id"), message.control_id),
            (t("errors.col.attempts"), str(message.attempts)),
            (t("errors.col.reason"), message.last_error or ""),
            (t("errors.col.location"), message.error_location or ""),
        ]
        for label, value in lines:
            out.print(f"{label}: {value}", markup=False)
        if raw:
            out.print(message.message.replace("\r", "\n"), markup=False)

    @errors_app.command("replay", help=t("cmd.errors.replay"))
    def replay_command(
        message_id: Optional[int] = typer.Argument(None, metavar="[ID]", help=t("arg.errors.id")),
        replay_all: bool = typer.Option(False, "--all", help=t("opt.errors.all")),
        now: bool = typer.Option(False, "--now", help=t("opt.errors.now")),
    ):
        from ..errors import ExitCode, SoncoError
        from .main import err, fail

        if (message_id is None) == (not replay_all):
            fail(SoncoError(t("errors.replay_usage"), ExitCode.USAGE))
        with _open_store() as store:
            if replay_all:
                ids = [message.id for message in store.errors()]
            else:
                ids = [_get(store, message_id).id]
            for replayed_id in ids:
                store.reset_for_replay(replayed_id)
            err.print(t("errors.replayed", count=len(ids)))
            if now:
                _process_now(store)


def _open_store():
    from ..config import load_settings
    from ..connectors.store import MessageStore, store_path
    from ..errors import ConfigurationError
    from .main import fail

    path = store_path(load_settings().data_dir)
    try:
        return MessageStore(path)
    except (OSError, sqlite3.Error) as error:
        fail(ConfigurationError(t("listen.store_failed", path=path, reason=error)))


def _get(store, message_id: int):
    from ..errors import ExitCode, SoncoError
    from .main import fail

    try:
        return store.get(message_id)
    except KeyError:
        fail(SoncoError(t("errors.not_found", id=message_id), ExitCode.USAGE))


def _process_now(store) -> None:
    """Process the whole pending queue once, against SONCO_FHIR_URL."""
    from ..config import load_settings
    from ..connectors.worker import process_pending
    from ..errors import ExitCode, ServerError, SoncoError
    from ..loading.hapi import FhirServer
    from ..pipeline import build_engine
    from .main import err, fail

    settings = load_settings()
    try:
        server = FhirServer(settings.fhir_url)
        if not server.is_up():
            raise ServerError(t("server.unreachable", url=settings.fhir_url))
        engine = build_engine(settings, read_only=False)
        counts = process_pending(store, engine, server)
        if counts.server_unreachable:
            raise ServerError(counts.server_error)
    except SoncoError as error:
        fail(error)
    err.print(t("errors.processed", done=counts.done, errors=counts.errors, pending=store.count("pending")))
    if counts.errors:
        raise typer.Exit(int(ExitCode.RECORDS_REJECTED))
