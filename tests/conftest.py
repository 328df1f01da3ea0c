"""Shared fixtures: a fixed pseudonymisation key, and one real HAPI FHIR server per test session."""

import os
import shutil
import socket
from pathlib import Path

import pytest

from sonco_fhir import i18n
from sonco_fhir.config import load_settings

REPOSITORY = Path(__file__).resolve().parent.parent
CASES = REPOSITORY.parent / "shared" / "cases"
TEST_KEY = "sonco-test-key-0123456789abcdef0123456789abcdef0123456789abcdef"


@pytest.fixture(autouse=True)
def test_environment(monkeypatch, tmp_path):
    """Every test gets the fixed key, its own data folder and French messages."""
    monkeypatch.setenv("SONCO_PSEUDONYM_KEY", TEST_KEY)
    monkeypatch.setenv("SONCO_DATA_DIR", str(tmp_path / "data"))
    i18n.set_language("fr")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def hapi(tmp_path_factory):
    """A real HAPI FHIR JPA server (H2) started once for the session, with the SONCO profiles loaded.

    Yields its FHIR base URL. Tests that load data point SONCO_FHIR_URL at it.
    """
    from sonco_fhir.server.manage import start_server, stop_server

    data_dir = tmp_path_factory.mktemp("hapi")
    port = _free_port()
    previous = {name: os.environ.get(name) for name in ("SONCO_DATA_DIR", "SONCO_SERVER_PORT", "SONCO_FHIR_URL")}
    os.environ.update({"SONCO_DATA_DIR": str(data_dir), "SONCO_SERVER_PORT": str(port)})
    os.environ.pop("SONCO_FHIR_URL", None)
    settings = load_settings()
    try:
        start_server(settings)
        yield settings.fhir_url
    finally:
        stop_server(settings)
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture
def cohort_env(hapi, monkeypatch):
    """Point the CLI and pipeline at the session's HAPI server."""
    monkeypatch.setenv("SONCO_FHIR_URL", hapi)
    return hapi
