"""`sonco-fhir listen mllp`: receive HL7 v2 messages over MLLP into the message store."""

import asyncio
import logging
import signal
import sqlite3
from pathlib import Path
from typing import Optional

import typer

from .. import i18n
from ..i18n import t


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
        load: bool = typer.Option(True, "--load/--no-load", help=text("opt.listen.load")),
    ):
        from ..config import load_settings
        from ..connectors.mllp import MllpListener, server_tls_context
        from ..connectors.store import MessageStore, store_path
        from ..connectors.worker import LoadingThread
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
                    raise ConfigurationError(text("listen.tls_invalid", cert=tls_cert, key=tls_key, reason=error))
            path = store_path(load_settings().data_dir)
            try:
                store = MessageStore(path)
            except (OSError, sqlite3.Error) as error:
                raise ConfigurationError(text("listen.store_failed", path=path, reason=error))
        except SoncoError as error:
            fail(error)

        worker = LoadingThread(store) if load else None
        if worker is not None:
            try:
                worker.start()
            except SoncoError as error:
                store.close()
                fail(error)

        listener = MllpListener(store, host, port, ssl_context=context, max_frame_bytes=max_frame_bytes,
                                read_timeout=read_timeout)

        def announce() -> None:
            tls = text("listen.tls_on") if context else text("listen.tls_off")
            err.print(text("listen.started", host=host, port=listener.port, tls=tls, path=path), markup=False)

        try:
            asyncio.run(_run_until_signal(listener, announce))
        except OSError as error:
            fail(ConfigurationError(text("listen.bind_failed", host=host, port=port, reason=error.strerror or error)))
        finally:
            if worker is not None:
                worker.stop()
            store.close()
        err.print(text("listen.stopped"))


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
