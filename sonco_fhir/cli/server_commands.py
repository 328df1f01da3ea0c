"""`sonco-fhir server start|stop|status`."""

import typer

from .. import i18n


def register(app: typer.Typer) -> None:
    t = i18n.t
    server_app = typer.Typer(help=t("cmd.server"), no_args_is_help=True)
    app.add_typer(server_app, name="server")

    @server_app.command("start", help=t("cmd.server.start"))
    def start():
        from ..config import load_settings
        from ..errors import SoncoError
        from ..server.manage import start_server
        from .main import err, fail

        try:
            message = start_server(load_settings())
        except SoncoError as error:
            fail(error)
        err.print(message)

    @server_app.command("stop", help=t("cmd.server.stop"))
    def stop():
        from ..config import load_settings
        from ..server.manage import stop_server
        from .main import err

        err.print(stop_server(load_settings()))

    @server_app.command("status", help=t("cmd.server.status"))
    def status():
        from ..config import load_settings
        from ..server.manage import server_status
        from .main import err

        running, message = server_status(load_settings())
        err.print(message)
        if not running:
            raise typer.Exit(1)
