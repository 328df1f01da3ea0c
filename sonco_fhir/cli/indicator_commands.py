"""`sonco-fhir indicators`."""

import typer

from .. import i18n


def register(app: typer.Typer) -> None:
    pass
