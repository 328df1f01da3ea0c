"""`sonco-fhir poll spice|hygen`: read the records changed since the last poll from the platform API and load them."""

import typer

from .. import i18n
from ..errors import ExitCode, SoncoError

PLATFORMS = ("spice", "hygen")


def poll(kind: str, full: bool, sleep=None):
    """Poll one platform and load what changed; return the RunSummary and whether the checkpoint moved.

    The checkpoint advances only when every record read was loaded, so a
    record the server rejected, or one set aside, is read again next time.
    """
    from ..config import load_settings
    from ..connectors import platform_api, tabular
    from ..errors import ServerError
    from ..loading.hapi import FhirServer
    from ..pipeline import build_engine, load_records, map_read

    settings = load_settings()
    contract = tabular.load_contract(kind, settings)
    config = platform_api.load_api_config(contract.path, contract.api)
    client = platform_api.PlatformClient(config, **({"sleep": sleep} if sleep else {}))
    server = FhirServer(settings.fhir_url)
    if not server.is_up():
        raise ServerError(i18n.t("server.unreachable", url=settings.fhir_url))

    checkpoint = {} if full else platform_api.read_checkpoint(settings.data_dir, kind)
    read, latest = tabular.read_api(kind, settings, client, checkpoint)
    engine = build_engine(settings, read_only=False)
    mapped, summary = map_read(read, engine)
    load_records(mapped, server, summary)
    advanced = summary.records_rejected == 0
    if advanced:
        platform_api.write_checkpoint(settings.data_dir, kind, latest)
    return summary, advanced, platform_api.checkpoint_path(settings.data_dir, kind)


def register(app: typer.Typer) -> None:
    from .main import err, fail, print_summary

    t = i18n.t

    @app.command("poll", help=t("poll.help"))
    def poll_command(
        kind: str = typer.Argument(..., help=t("poll.arg.kind")),
        full: bool = typer.Option(False, "--full", help=t("poll.opt.full")),
    ):
        if kind not in PLATFORMS:
            fail(SoncoError(t("input.unknown_kind", kind=kind, known=", ".join(PLATFORMS)), ExitCode.USAGE))
        try:
            summary, advanced, path = poll(kind, full)
        except SoncoError as error:
            fail(error)
        print_summary(summary, mapped_only=False)
        if advanced:
            err.print(t("poll.checkpoint_saved", path=path), markup=False)
        else:
            err.print(t("poll.checkpoint_kept", count=summary.records_rejected), markup=False)
        if summary.problems:
            raise typer.Exit(int(ExitCode.RECORDS_REJECTED))
