"""`sonco-fhir errors`: list, show and replay the stored HL7 v2 messages that could not be loaded."""

import sqlite3
from typing import Optional

import typer

from ..i18n import t


def register(app: typer.Typer) -> None:
    errors_app = typer.Typer(help=t("cmd.errors"), no_args_is_help=True)
    app.add_typer(errors_app, name="errors")

    @errors_app.command("list", help=t("cmd.errors.list"))
    def list_command(rejected: bool = typer.Option(False, "--rejected", help=t("opt.errors.rejected"))):
        from rich.table import Table

        from .main import err, out

        from ..connectors.worker import count_held

        if rejected:
            _list_rejections()
            return
        with _open_store() as store:
            rows = store.errors()
            held_count = count_held(store)
            rejection_count = len(store.rejections())
        if rejection_count:
            err.print(t("errors.rejected_count", count=rejection_count))
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
        if held_count:
            err.print(t("errors.held", count=held_count))

    @errors_app.command("show", help=t("cmd.errors.show"))
    def show_command(
        message_id: int = typer.Argument(..., metavar="ID", help=t("arg.errors.id")),
        raw: bool = typer.Option(False, "--raw", help=t("opt.errors.raw")),
        rejected: bool = typer.Option(False, "--rejected", help=t("opt.errors.rejected")),
    ):
        from .main import out

        if rejected:
            _show_rejection(message_id, raw)
            return
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
        rejected: bool = typer.Option(False, "--rejected", help=t("opt.errors.rejected")),
    ):
        from ..errors import ExitCode, SoncoError
        from .main import err, fail

        if (message_id is None) == (not replay_all):
            fail(SoncoError(t("errors.replay_usage"), ExitCode.USAGE))
        if rejected:
            _replay_rejections(message_id)
            return
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


# --- Frames rejected at reception (AR) ----------------------------------------------


def _list_rejections() -> None:
    from rich.table import Table

    from .main import err, out

    with _open_store() as store:
        rows = store.rejections()
    if not rows:
        err.print(t("errors.rejected_none"))
        return
    table = Table()
    for column in ("errors.col.id", "errors.col.received", "errors.col.peer", "errors.col.application",
                   "errors.col.facility", "errors.col.control_id", "errors.col.reason", "errors.col.location"):
        table.add_column(t(column))
    for row in rows:
        table.add_row(str(row.id), row.received_at, row.peer, row.sending_application, row.sending_facility,
                      row.control_id, row.reason, row.location or "")
    out.print(table)


def _show_rejection(rejection_id: int, raw: bool) -> None:
    from .main import out

    with _open_store() as store:
        rejection = _get_rejection(store, rejection_id)
    lines = [
        (t("errors.col.id"), str(rejection.id)),
        (t("errors.col.received"), rejection.received_at),
        (t("errors.col.peer"), rejection.peer),
        (t("errors.col.application"), rejection.sending_application),
        (t("errors.col.facility"), rejection.sending_facility),
        (t("errors.col.control_id"), rejection.control_id),
        (t("errors.col.size"), str(rejection.size)),
        (t("errors.col.reason"), rejection.reason),
        (t("errors.col.location"), rejection.location or ""),
        (t("errors.col.code"), rejection.error_code),
    ]
    for label, value in lines:
        out.print(f"{label}: {value}", markup=False)
    if raw:
        out.print(rejection.message.replace("\r", "\n"), markup=False)


def _replay_rejections(rejection_id: int | None) -> None:
    """Check rejected frames again with today's mapping files, and store those that now pass."""
    from ..config import load_settings
    from ..connectors.mllp import MessageTypes, check_message
    from ..connectors.store import REJECTED_TEXT_CHARS
    from ..errors import ExitCode, SoncoError
    from .main import err, fail

    try:
        message_types = MessageTypes.from_folder(load_settings().mappings_dir / "hl7v2")
    except SoncoError as error:
        fail(error)
    still_rejected = 0
    with _open_store() as store:
        rows = store.rejections() if rejection_id is None else [_get_rejection(store, rejection_id)]
        for rejection in rows:
            if len(rejection.message) >= REJECTED_TEXT_CHARS and rejection.size > REJECTED_TEXT_CHARS:
                err.print(t("errors.rejected_truncated", id=rejection.id, size=rejection.size), markup=False)
                still_rejected += 1
                continue
            checked = check_message(rejection.message, "utf-8", message_types)
            if checked.rejection is not None:
                err.print(t("errors.rejected_still", id=rejection.id, reason=checked.rejection.reason,
                            location=checked.rejection.location or "-"), markup=False)
                still_rejected += 1
                continue
            store.accept(checked.message)
            store.delete_rejection(rejection.id)
        err.print(t("errors.rejected_replayed", count=len(rows) - still_rejected, rejected=still_rejected))
    if still_rejected:
        raise typer.Exit(int(ExitCode.RECORDS_REJECTED))


def _get_rejection(store, rejection_id: int):
    from ..errors import ExitCode, SoncoError
    from .main import fail

    try:
        return store.get_rejection(rejection_id)
    except KeyError:
        fail(SoncoError(t("errors.rejection_not_found", id=rejection_id), ExitCode.USAGE))
