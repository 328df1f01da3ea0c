"""`sonco-fhir poll`: the SPICE and HYGEN REST API client against a mock API (responses).

The platforms publish no API, so the API is mocked with `responses`: paging,
token expiry, 429 with Retry-After and 5xx. The last test loads a poll into
the session's real HAPI server, which the mock lets through.
"""

import csv
import json
import logging

import pytest
import requests
import responses
from typer.testing import CliRunner

from sonco_fhir import i18n
from sonco_fhir.cli.main import build_app
from sonco_fhir.config import load_settings
from sonco_fhir.connectors import platform_api, tabular
from sonco_fhir.errors import ExitCode
from conftest import REPOSITORY
from test_spice_hygen_golden import removed_afterwards

API = "https://api.hygen.test/v1/"
SPICE_API = "https://api.spice.test/v1/"
TOKEN_URL = "https://auth.hygen.test/token"
HYGEN_EXPORT = REPOSITORY / "examples" / "hygen" / "hygen_export_20240624.json"
SECRET = "s3cr3t-client-secret-value"


def dossiers() -> list[dict]:
    return json.loads(HYGEN_EXPORT.read_text(encoding="utf-8"))["dossiers"]


@pytest.fixture
def hygen_api(monkeypatch):
    monkeypatch.setenv("SONCO_HYGEN_API_URL", API)
    monkeypatch.setenv("SONCO_HYGEN_API_TOKEN", "static-token-1")
    i18n.set_language("en")
    contract = tabular.load_contract("hygen", load_settings())
    return platform_api.load_api_config(contract.path, contract.api)


class Sleeps(list):
    """Records the waits instead of sleeping."""

    def __call__(self, seconds):
        self.append(seconds)


@responses.activate
def test_paging_follows_next_links(hygen_api):
    records = dossiers()
    responses.get(API + "dossiers", json={"elements": records[:4], "suivant": API + "dossiers?page=2"})
    responses.get(API + "dossiers?page=2", json={"elements": records[4:]})
    client = platform_api.PlatformClient(hygen_api)
    read, latest = tabular.read_api("hygen", load_settings(), client, {})
    assert read.problems == []
    assert [record.data["row"]["numero_demande"] for record in read.records] == [d["numero_demande"] for d in records]
    assert latest == {"dossiers": "2024-06-20T15:02:00+02:00"}  # HYG-24-0590, the latest date_mise_a_jour
    first = responses.calls[0].request
    assert first.params == {"taille": "200"}
    assert first.headers["Authorization"] == "Bearer static-token-1"
    assert len(responses.calls) == 2


@responses.activate
def test_checkpoint_sent_as_modified_since(hygen_api):
    responses.get(API + "dossiers", json={"elements": []})
    client = platform_api.PlatformClient(hygen_api)
    read, latest = tabular.read_api("hygen", load_settings(), client, {"dossiers": "2024-06-20T15:02:00+02:00"})
    assert read.records == []
    assert latest == {"dossiers": "2024-06-20T15:02:00+02:00"}
    assert responses.calls[0].request.params == {"taille": "200", "modifie_depuis": "2024-06-20T15:02:00+02:00"}


@responses.activate
def test_bad_record_set_aside_with_page_and_index(hygen_api):
    records = dossiers()
    del records[1]["type_analyse"]
    responses.get(API + "dossiers", json={"elements": records[:3]})
    client = platform_api.PlatformClient(hygen_api)
    read, _ = tabular.read_api("hygen", load_settings(), client, {})
    assert len(read.records) == 2
    assert read.problems[0].source == API + "dossiers"
    assert read.problems[0].location == "record 2, field type_analyse"


@responses.activate
def test_expired_token_is_renewed_once(hygen_api, monkeypatch, caplog):
    monkeypatch.setenv("SONCO_HYGEN_API_TOKEN_URL", TOKEN_URL)
    monkeypatch.setenv("SONCO_HYGEN_API_CLIENT_ID", "sonco")
    monkeypatch.setenv("SONCO_HYGEN_API_CLIENT_SECRET", SECRET)
    responses.post(TOKEN_URL, json={"access_token": "token-A", "expires_in": 3600})
    responses.post(TOKEN_URL, json={"access_token": "token-B", "expires_in": 3600})
    responses.get(API + "dossiers", status=401, json={"error": "token expired"})
    responses.get(API + "dossiers", json={"elements": dossiers()[:1]})
    caplog.set_level(logging.DEBUG)
    client = platform_api.PlatformClient(hygen_api)
    pages = list(client.pages("dossiers", None))
    assert len(pages[0][1]) == 1
    authorizations = [call.request.headers.get("Authorization") for call in responses.calls if call.request.method == "GET"]
    assert authorizations == ["Bearer token-A", "Bearer token-B"]
    token_calls = [call for call in responses.calls if call.request.url == TOKEN_URL]
    assert len(token_calls) == 2
    assert "grant_type=client_credentials" in token_calls[0].request.body
    assert SECRET not in caplog.text
    assert "token-A" not in caplog.text
    assert "token-B" not in caplog.text


@responses.activate
def test_token_refused_twice_fails(hygen_api):
    responses.get(API + "dossiers", status=401)
    client = platform_api.PlatformClient(hygen_api)
    with pytest.raises(platform_api.PlatformApiError) as raised:
        list(client.pages("dossiers", None))
    assert "HTTP 401" in str(raised.value)
    assert "static-token-1" not in str(raised.value)
    assert len(responses.calls) == 2


@responses.activate
def test_token_near_expiry_is_renewed_before_request(hygen_api, monkeypatch):
    monkeypatch.setenv("SONCO_HYGEN_API_TOKEN_URL", TOKEN_URL)
    monkeypatch.setenv("SONCO_HYGEN_API_CLIENT_ID", "sonco")
    monkeypatch.setenv("SONCO_HYGEN_API_CLIENT_SECRET", SECRET)
    responses.post(TOKEN_URL, json={"access_token": "short-1", "expires_in": 10})
    responses.post(TOKEN_URL, json={"access_token": "short-2", "expires_in": 10})
    responses.get(API + "dossiers", json={"elements": [], "suivant": API + "dossiers?page=2"})
    responses.get(API + "dossiers?page=2", json={"elements": []})
    client = platform_api.PlatformClient(hygen_api)
    list(client.pages("dossiers", None))
    authorizations = [call.request.headers.get("Authorization") for call in responses.calls if call.request.method == "GET"]
    # 10 s is within the 30 s margin, so each page gets a fresh token.
    assert authorizations == ["Bearer short-1", "Bearer short-2"]


@responses.activate
def test_429_waits_for_retry_after(hygen_api):
    responses.get(API + "dossiers", status=429, headers={"Retry-After": "7"})
    responses.get(API + "dossiers", json={"elements": dossiers()[:2]})
    sleeps = Sleeps()
    client = platform_api.PlatformClient(hygen_api, sleep=sleeps)
    pages = list(client.pages("dossiers", None))
    assert sleeps == [7.0]
    assert len(pages[0][1]) == 2


@responses.activate
def test_429_wait_is_capped_and_bounded(hygen_api):
    for _ in range(4):
        responses.get(API + "dossiers", status=429, headers={"Retry-After": "3600"})
    sleeps = Sleeps()
    client = platform_api.PlatformClient(hygen_api, sleep=sleeps)
    with pytest.raises(platform_api.PlatformApiError) as raised:
        list(client.pages("dossiers", None))
    assert sleeps == [120.0, 120.0, 120.0]  # max_retry_after_seconds, max_retries times
    assert "HTTP 429" in str(raised.value)


def test_retry_after_http_date():
    assert platform_api.retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT", 120) == 1.0  # in the past
    assert platform_api.retry_after_seconds(None, 120) == 1.0
    assert platform_api.retry_after_seconds("30", 120) == 30.0


@responses.activate
def test_5xx_retried_then_succeeds(hygen_api):
    responses.get(API + "dossiers", status=503)
    responses.get(API + "dossiers", status=502)
    responses.get(API + "dossiers", json={"elements": dossiers()[:1]})
    hygen_api.backoff_factor = 0
    client = platform_api.PlatformClient(hygen_api)
    pages = list(client.pages("dossiers", None))
    assert len(pages[0][1]) == 1
    assert len(responses.calls) == 3


@responses.activate
def test_5xx_persistent_fails_after_retries(hygen_api):
    responses.get(API + "dossiers", status=500)
    hygen_api.backoff_factor = 0
    client = platform_api.PlatformClient(hygen_api)
    with pytest.raises(platform_api.PlatformApiError) as raised:
        list(client.pages("dossiers", None))
    assert str(raised.value) == f"{API}dossiers: HTTP 500 after the retries; poll again later"
    assert len(responses.calls) == 4  # the request and max_retries (3) retries
    assert raised.value.exit_code == ExitCode.SERVER_UNAVAILABLE


def test_missing_url_names_variable(hygen_api, monkeypatch):
    monkeypatch.delenv("SONCO_HYGEN_API_URL")
    with pytest.raises(platform_api.PlatformApiError) as raised:
        platform_api.PlatformClient(hygen_api)
    assert "SONCO_HYGEN_API_URL" in str(raised.value)
    assert raised.value.exit_code == ExitCode.CONFIGURATION


@responses.activate
def test_token_from_file(hygen_api, monkeypatch, tmp_path):
    monkeypatch.delenv("SONCO_HYGEN_API_TOKEN")
    token_file = tmp_path / "token"
    token_file.write_text("file-token\n", encoding="utf-8")
    monkeypatch.setenv("SONCO_HYGEN_API_TOKEN_FILE", str(token_file))
    responses.get(API + "dossiers", json={"elements": []})
    list(platform_api.PlatformClient(hygen_api).pages("dossiers", None))
    assert responses.calls[0].request.headers["Authorization"] == "Bearer file-token"


def test_client_certificate(hygen_api, monkeypatch, tmp_path):
    hygen_api.auth = {"type": "client_certificate", "cert_file_env": "CERT", "key_file_env": "KEY"}
    monkeypatch.setenv("CERT", str(tmp_path / "client.pem"))
    monkeypatch.setenv("KEY", str(tmp_path / "client.key"))
    client = platform_api.PlatformClient(hygen_api)
    assert client.session.cert == (str(tmp_path / "client.pem"), str(tmp_path / "client.key"))
    assert client._bearer(renew=False) is None


@responses.activate
def test_spice_endpoints_in_contract_order(monkeypatch):
    monkeypatch.setenv("SONCO_SPICE_API_URL", SPICE_API)
    monkeypatch.setenv("SONCO_SPICE_API_TOKEN", "spice-token")
    settings = load_settings()
    contract = tabular.load_contract("spice", settings)
    config = platform_api.load_api_config(contract.path, contract.api)
    for file_kind, path in config.endpoints.items():
        source = next((REPOSITORY / "examples" / "spice").glob(f"spice_{file_kind}_*.csv"))
        with open(source, encoding="utf-8-sig", newline="") as handle:
            rows = list(csv.DictReader(handle, delimiter=";"))
        responses.get(SPICE_API + path, json={"elements": rows})
    read, latest = tabular.read_api("spice", settings, platform_api.PlatformClient(config), {})
    assert read.problems == []
    assert [call.request.path_url.split("?")[0] for call in responses.calls] == [
        "/v1/demandes", "/v1/prelevements", "/v1/resultats", "/v1/comptes-rendus", "/v1/rcp-aval"]
    assert len(read.records) == 28
    assert latest["rcp_aval"] == "02/07/2024 09:12"


def test_checkpoint_round_trip(tmp_path):
    platform_api.write_checkpoint(tmp_path, "hygen", {"dossiers": "2024-06-20T15:02:00+02:00"})
    assert platform_api.read_checkpoint(tmp_path, "hygen") == {"dossiers": "2024-06-20T15:02:00+02:00"}
    assert platform_api.read_checkpoint(tmp_path, "spice") == {}


# --- on the session's HAPI server ---


@pytest.mark.server
def test_poll_loads_then_reads_only_changes(cohort_env, monkeypatch, tmp_path):
    monkeypatch.setenv("SONCO_HYGEN_API_URL", API)
    monkeypatch.setenv("SONCO_HYGEN_API_TOKEN", "static-token-1")
    monkeypatch.setenv("SONCO_PSEUDONYM_KEY", "sonco-poll-key-" + "0123456789abcdef" * 3)
    data_dir = tmp_path / "poll-data"
    monkeypatch.setenv("SONCO_DATA_DIR", str(data_dir))
    runner = CliRunner()
    identifier = {"identifier": "https://sonco.example/fhir/NamingSystem/hygen-request|HYG-24-0312"}
    before = requests.get(f"{cohort_env}/ServiceRequest", params=identifier, headers={"Cache-Control": "no-cache"},
                          timeout=60).json()["total"]
    with removed_afterwards(cohort_env), responses.RequestsMock() as mock:
        mock.add_passthru(cohort_env)
        mock.get(API + "dossiers", json={"elements": dossiers()})
        first = runner.invoke(build_app(), ["--lang", "en", "poll", "hygen"])
        assert first.exit_code == 0, first.output
        assert "7 loaded" in first.output
        checkpoint = json.loads((data_dir / "poll-hygen.json").read_text(encoding="utf-8"))
        assert checkpoint == {"dossiers": "2024-06-20T15:02:00+02:00"}

        mock.replace(responses.GET, API + "dossiers", json={"elements": []})
        second = runner.invoke(build_app(), ["--lang", "en", "poll", "hygen"])
        assert second.exit_code == 0, second.output
        polled = [call.request for call in mock.calls if call.request.url.startswith(API)]
        assert polled[-1].params["modifie_depuis"] == "2024-06-20T15:02:00+02:00"
        after = requests.get(f"{cohort_env}/ServiceRequest", params=identifier, headers={"Cache-Control": "no-cache"},
                             timeout=60).json()["total"]
        assert after == before + 1  # loaded once, with this test's key, over two polls
