"""`sonco-fhir listen mllp|folder`: receive HL7 v2 messages over MLLP or from a drop folder into the message store."""

import asyncio
import logging
import signal
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import typer

from ..i18n import t


@dataclass
class _Service:
    """The store, loading worker and acceptance rules that both listeners share."""

    store: object
    path: Path
    worker: object
    message_types: object
    in_cohort: object

    def close(self) -> None:
        if self.worker is not None:
            self.worker.stop()
        self.store.close()


def register(app: typer.Typer) -> None:
    text = t
    listen_app = typer.Typer(help=text("cmd.listen"), no_args_is_help=True)
    app.add_typer(listen_app, name="listen")

    @listen_app.command("mllp", help=text("cmd.listen.mllp"))
    def listen_mllp(
        host: str = typer.Option("127.0.0.1", "--host", help=text("opt.listen.host")),
        port: int = typer.Option(2575, "--port", min=0, max=65535, help=text("opt.listen.port")),
        tls_cert: Optional[Path] = typer.Option(None, "--tls-cert", help=text("opt.listen.tls_cert")),
        tls_key: Optional[Path] = typer.Option(None, "--tls-key", help=text("opt.listen.tls_key")),
        max_frame_bytes: int = typer.Option(16 * 1024 * 1024, "--max-frame-bytes", min=1024,
                                            help=text("opt.listen.max_frame_bytes")),
        read_timeout: float = typer.Option(30.0, "--read-timeout", min=0.1, help=text("opt.listen.read_timeout")),
        frame_timeout: float = typer.Option(300.0, "--frame-timeout", min=0.1, help=text("opt.listen.frame_timeout")),
        idle_timeout: Optional[float] = typer.Option(None, "--idle-timeout", min=0.1,
                                                     help=text("opt.listen.idle_timeout")),
        max_connections: int = typer.Option(64, "--max-connections", min=1, help=text("opt.listen.max_connections")),
        load: bool = _load_option(),
        cohort_file: Optional[Path] = _cohort_option(),
        accept_unmapped: bool = _accept_unmapped_option(),
        retry_max: float = _retry_max_option(),
    ):
        from ..connectors.mllp import MllpListener, server_tls_context
        from ..errors import ConfigurationError, ExitCode, SoncoError
        from .main import err, fail

        _enable_service_logging()
        try:
            if (tls_cert is None) != (tls_key is None):
                raise SoncoError(text("listen.tls_pair"), ExitCode.USAGE)
            context = None
            if tls_cert is not None:
                try:
                    context = server_tls_context(tls_cert, tls_key)
                except (OSError, ValueError) as error:
                    raise ConfigurationError(text("listen.tls_invalid", cert=tls_cert, key_file=tls_key, reason=error))
        except SoncoError as error:
            fail(error)
        service = _open_service(load, cohort_file, accept_unmapped, retry_max)

        listener = MllpListener(service.store, host, port, ssl_context=context, max_frame_bytes=max_frame_bytes,
                                read_timeout=read_timeout, frame_timeout=frame_timeout, idle_timeout=idle_timeout,
                                max_connections=max_connections, message_types=service.message_types,
                                in_cohort=service.in_cohort)

        def announce() -> None:
            tls = text("listen.tls_on") if context else text("listen.tls_off")
            err.print(text("listen.started", host=host, port=listener.port, tls=tls, path=service.path), markup=False)

        try:
            asyncio.run(_run_until_signal(listener, announce))
        except OSError as error:
            fail(ConfigurationError(text("listen.bind_failed", host=host, port=port, reason=error.strerror or error)))
        finally:
            service.close()
        err.print(text("listen.stopped"))

    @listen_app.command("folder", help=text("cmd.listen.folder"))
    def listen_folder(
        folder: Path = typer.Argument(..., metavar="DIR", file_okay=False, help=text("arg.listen.folder")),
        settle_seconds: float = typer.Option(2.0, "--settle-seconds", min=0.0, help=text("opt.listen.settle_seconds")),
        interval: float = typer.Option(1.0, "--interval", min=0.05, help=text("opt.listen.interval")),
        load: bool = _load_option(),
        cohort_file: Optional[Path] = _cohort_option(),
        accept_unmapped: bool = _accept_unmapped_option(),
        retry_max: float = _retry_max_option(),
    ):
        from ..connectors.dropfolder import DropFolder
        from ..errors import ConfigurationError
        from .main import err, fail

        _enable_service_logging()
        service = _open_service(load, cohort_file, accept_unmapped, retry_max)
        try:
            watcher = DropFolder(folder, service.store, settle_seconds=settle_seconds,
                                 message_types=service.message_types, in_cohort=service.in_cohort)
        except OSError as error:
            service.close()
            fail(ConfigurationError(text("listen.folder_failed", folder=folder, reason=error.strerror or error)))

        stop = threading.Event()
        for signal_number in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signal_number, lambda *_: stop.set())
        err.print(text("listen.folder_started", folder=folder, path=service.path), markup=False)
        try:
            watcher.run(stop, interval)
        finally:
            service.close()
        err.print(text("listen.folder_stopped"))


def _open_service(load: bool, cohort_file: Path | None, accept_unmapped: bool, retry_max: float) -> _Service:
    """Open the store, read the mapping folder and the cohort file, and start the loading worker; exit on failure."""
    from ..config import load_settings
    from ..connectors.cohort import CohortFile
    from ..connectors.mllp import MessageTypes
    from ..connectors.store import MessageStore, store_path
    from ..connectors.worker import Backoff, LoadingThread
    from ..errors import ConfigurationError, SoncoError
    from .main import fail

    settings = load_settings()
    path = store_path(settings.data_dir)
    try:
        message_types = None if accept_unmapped else MessageTypes.from_folder(settings.mappings_dir / "hl7v2")
        in_cohort = None
        if cohort_file is not None:
            try:
                in_cohort = CohortFile(cohort_file)
            except (OSError, UnicodeDecodeError) as error:
                raise ConfigurationError(t("listen.cohort_failed", path=cohort_file, reason=error)) from None
        try:
            store = MessageStore(path)
        except (OSError, sqlite3.Error) as error:
            raise ConfigurationError(t("listen.store_failed", path=path, reason=error)) from None
    except SoncoError as error:
        fail(error)

    worker = LoadingThread(store, Backoff(maximum=retry_max)) if load else None
    if worker is not None:
        try:
            worker.start()
        except SoncoError as error:
            store.close()
            fail(error)
    return _Service(store, path, worker, message_types, in_cohort)


# Options of both `listen` commands. Each call builds a new option, because typer keeps one per parameter.
def _load_option():
    return typer.Option(True, "--load/--no-load", help=t("opt.listen.load"))


def _cohort_option():
    return typer.Option(None, "--cohort-file", envvar="SONCO_COHORT_FILE", help=t("opt.listen.cohort_file"))


def _accept_unmapped_option():
    return typer.Option(False, "--accept-unmapped/--reject-unmapped", help=t("opt.listen.accept_unmapped"))


def _retry_max_option():
    return typer.Option(60.0, "--retry-max", min=0.1, help=t("opt.listen.retry_max"))


async def _run_until_signal(listener, announce) -> None:
    """Serve until SIGTERM or SIGINT, then stop the listener cleanly."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signal_number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signal_number, stop.set)
    await listener.start()
    announce()
    try:
        await stop.wait()
    finally:
        await listener.stop()


def _enable_service_logging() -> None:
    """Send the listener's INFO logs to stderr with a timestamp, as a long-running service needs."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    service_log = logging.getLogger("sonco_fhir.connectors")
    service_log.setLevel(logging.INFO)
    service_log.addHandler(handler)
    service_log.propagate = False
