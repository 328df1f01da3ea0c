"""`pull fhir` without a server: source files, paging, retries, authentication and bulk export, on mocked HTTP.

The retry and token tests use `responses`; test_fhir_pull_server.py runs the pull against a real HAPI as the EHR.
"""

import json
import logging
from email.utils import format_datetime
from datetime import datetime, timedelta, timezone
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest
import requests
import responses
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from sonco_fhir.connectors.fhir_bulk import BulkExportUnsupported, group_export
from sonco_fhir.connectors.fhir_client import FhirClient, retry_after_seconds
from sonco_fhir.connectors.fhir_rest import read_identifier_list
from sonco_fhir.connectors.fhir_sources import load_source
from sonco_fhir.errors import ConfigurationError, ServerError

BASE = "http://ehr.test/fhir"
TOKEN_URL = "http://ehr.test/auth/token"
NOW = 1_800_000_000.0


class FakeTime:
    """A clock that `sleep` advances, so tests neither wait nor depend on the real time."""

    def __init__(self, now: float = NOW):
        self.now = now
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def write_source(folder, name="ehr", **overrides) -> str:
    content = {"base_url": BASE, "cohort": {"known_patients": True}, "retry": {"max_attempts": 4, "backoff_seconds": 1,
                                                                                "max_wait_seconds": 30}}
    content.update(overrides)
    (folder / f"{name}.yaml").write_text(json.dumps(content), encoding="utf-8")
    return name


def client_for(tmp_path, time: FakeTime | None = None, **overrides) -> FhirClient:
    source = load_source(write_source(tmp_path, **overrides), tmp_path)
    time = time or FakeTime()
    return FhirClient(source, sleep=time.sleep, clock=time.clock)


def searchset(ids: list[str], next_url: str | None = None) -> dict:
    bundle = {"resourceType": "Bundle", "type": "searchset",
              "entry": [{"resource": {"resourceType": "Condition", "id": i}, "search": {"mode": "match"}} for i in ids]}
    if next_url:
        bundle["link"] = [{"relation": "self", "url": f"{BASE}/Condition"}, {"relation": "next", "url": next_url}]
    return bundle


def ids_of(pages) -> list[str]:
    return [entry["resource"]["id"] for page in pages for entry in page.get("entry", [])]


def rsa_key_pair():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return private.decode(), key.public_key()


def fhir_authorizations() -> list[str | None]:
    """Return the Authorization header of each FHIR request (GET) that `responses` recorded."""
    return [call.request.headers.get("Authorization") for call in responses.calls if call.request.method == "GET"]


def token_form(call) -> dict:
    return {name: values[0] for name, values in parse_qs(call.request.body).items()}


# --- source files ---


def test_source_file_values(tmp_path):
    (tmp_path / "ids.txt").write_text("urn:oid:1.2.250.1.213.1.4.8|x\n", encoding="utf-8")
    write_source(tmp_path, system="https://ehr.test", cohort={"identifiers_file": "ids.txt"}, page_size=50,
                 auth={"type": "bearer", "token_env": "EHR_TOKEN"}, tls={"client_certificate": "client.pem"},
                 bulk_export={"group": "cohort"}, schedule="daily 02:30")

    source = load_source("ehr", tmp_path)

    assert source.base_url == BASE
    assert source.system == "https://ehr.test"
    assert source.identifiers_file == tmp_path / "ids.txt"
    assert source.known_patients is False
    assert source.page_size == 50
    assert source.auth.token.env == "EHR_TOKEN"
    assert source.tls.client_certificate == tmp_path / "client.pem"
    assert source.bulk_group == "cohort"
    assert source.schedule == "daily 02:30"


def test_source_system_defaults_to_base_url(tmp_path):
    assert load_source(write_source(tmp_path), tmp_path).system == BASE


def test_source_not_found_names_known(tmp_path):
    write_source(tmp_path, name="chu-a")

    with pytest.raises(ConfigurationError) as raised:
        load_source("chu-b", tmp_path)

    assert "chu-b" in str(raised.value)
    assert "chu-a" in str(raised.value)


@pytest.mark.parametrize("overrides, named", [
    ({"base_url": "ehr.test/fhir"}, "base_url"),
    ({"auth": {"type": "kerberos"}}, "auth.type"),
    ({"auth": {"type": "basic", "username": "u"}}, "auth.password"),
    ({"auth": {"type": "bearer", "token": "abc"}}, "auth.token_file"),
    ({"auth": {"type": "smart-backend", "token_url": TOKEN_URL, "client_id": "c", "private_key_env": "K",
               "algorithm": "HS256"}}, "auth.algorithm"),
    ({"page_size": 0}, "page_size"),
    ({"cohort": {}}, "cohort.identifiers_file"),
    ({"pages": 3}, "pages"),
])
def test_source_invalid_value_named(tmp_path, overrides, named):
    write_source(tmp_path, **overrides)

    with pytest.raises(ConfigurationError) as raised:
        load_source("ehr", tmp_path)

    assert named in str(raised.value)


def test_inline_secret_not_echoed(tmp_path):
    write_source(tmp_path, auth={"type": "bearer", "token": "s3cr3t-value"})

    with pytest.raises(ConfigurationError) as raised:
        load_source("ehr", tmp_path)

    assert "s3cr3t-value" not in str(raised.value)


def test_identifier_list_lines(tmp_path):
    path = tmp_path / "ids.txt"
    path.write_text("# cohort\n\nurn:oid:1.2.250.1.213.1.4.8|179125612113516\nhttp://hospital.example.org|m123\n",
                    encoding="utf-8")

    assert read_identifier_list(path) == [
        (3, "urn:oid:1.2.250.1.213.1.4.8", "179125612113516"),
        (4, "http://hospital.example.org", "m123"),
    ]


def test_identifier_list_bad_line_hides_value(tmp_path):
    path = tmp_path / "ids.txt"
    path.write_text("http://hospital.example.org|m123\n179125612113516\n", encoding="utf-8")

    with pytest.raises(ConfigurationError) as raised:
        read_identifier_list(path)

    assert "line 2" in str(raised.value) or "ligne 2" in str(raised.value)
    assert "179125612113516" not in str(raised.value)


# --- paging ---


@responses.activate
def test_paging_absolute_and_host_relative(tmp_path):
    client = client_for(tmp_path)
    responses.get(f"{BASE}/Condition", match=[responses.matchers.query_param_matcher({"patient": "Patient/1"})],
                  json=searchset(["a", "b"], f"{BASE}?_getpages=p1&_getpagesoffset=2"))
    responses.get(f"{BASE}", match=[responses.matchers.query_param_matcher({"_getpages": "p1", "_getpagesoffset": "2"})],
                  json=searchset(["c"], "/fhir?_getpages=p1&_getpagesoffset=3"))
    responses.get(f"{BASE}", match=[responses.matchers.query_param_matcher({"_getpages": "p1", "_getpagesoffset": "3"})],
                  json=searchset(["d"]))

    pages = list(client.search("Condition", {"patient": "Patient/1"}))

    assert ids_of(pages) == ["a", "b", "c", "d"]
    assert len(responses.calls) == 3


@responses.activate
def test_paging_stops_on_repeated_link(tmp_path, caplog):
    client = client_for(tmp_path)
    first = f"{BASE}/Condition?patient=Patient%2F1"
    responses.get(f"{BASE}/Condition", match=[responses.matchers.query_param_matcher({"patient": "Patient/1"})],
                  json=searchset(["a"], f"{BASE}/Condition?page=2"))
    responses.get(f"{BASE}/Condition", match=[responses.matchers.query_param_matcher({"page": "2"})],
                  json=searchset(["b"], first))

    with caplog.at_level(logging.WARNING):
        pages = list(client.search("Condition", {"patient": "Patient/1"}))

    assert ids_of(pages) == ["a", "b"]
    assert len(responses.calls) == 2
    assert "repeats an earlier page" in caplog.text


@responses.activate
def test_paging_stops_on_link_to_second_page(tmp_path):
    client = client_for(tmp_path)
    responses.get(f"{BASE}/Condition", match=[responses.matchers.query_param_matcher({"patient": "Patient/1"})],
                  json=searchset(["a"], f"{BASE}/Condition?page=2"))
    responses.get(f"{BASE}/Condition", match=[responses.matchers.query_param_matcher({"page": "2"})],
                  json=searchset(["b"], f"{BASE}/Condition?page=3"))
    responses.get(f"{BASE}/Condition", match=[responses.matchers.query_param_matcher({"page": "3"})],
                  json=searchset(["c"], f"{BASE}/Condition?page=2"))

    assert ids_of(client.search("Condition", {"patient": "Patient/1"})) == ["a", "b", "c"]
    assert len(responses.calls) == 3


# --- retries ---


RETRY_AFTER_DATE = format_datetime(datetime.fromtimestamp(NOW, timezone.utc) + timedelta(seconds=12), usegmt=True)


@responses.activate
@pytest.mark.parametrize("failure, expected_wait", [
    ({"status": 429, "headers": {"Retry-After": "7"}}, 7.0),  # Retry-After in seconds
    ({"status": 503, "headers": {"Retry-After": RETRY_AFTER_DATE}}, 12.0),  # an HTTP date 12 s after the clock
    ({"status": 429, "headers": {"Retry-After": "3600"}}, 30.0),  # capped at retry.max_wait_seconds
    ({"status": 503}, 1.0),  # no Retry-After: backoff_seconds
    ({"status": 502}, 1.0),
    ({"body": requests.Timeout("read timed out")}, 1.0),
])
def test_retry_waits_then_succeeds(tmp_path, failure, expected_wait):
    time = FakeTime()
    client = client_for(tmp_path, time)
    responses.get(f"{BASE}/Condition", **failure)
    responses.get(f"{BASE}/Condition", json=searchset(["a"]))

    pages = list(client.search("Condition", {}))

    assert ids_of(pages) == ["a"]
    assert time.sleeps == [expected_wait]
    assert client.retries == 1


@responses.activate
def test_500_exponential_backoff_then_error(tmp_path):
    time = FakeTime()
    client = client_for(tmp_path, time)
    responses.get(f"{BASE}/Condition", status=500)

    with pytest.raises(ServerError) as raised:
        list(client.search("Condition", {}))

    # max_attempts 4: three waits of 1, 2 and 4 s (backoff_seconds 1, doubled), then the error.
    assert time.sleeps == [1.0, 2.0, 4.0]
    assert len(responses.calls) == 4
    assert "500" in str(raised.value)


@responses.activate
def test_connection_error_exhausted(tmp_path):
    time = FakeTime()
    client = client_for(tmp_path, time)
    responses.get(f"{BASE}/Condition", body=requests.ConnectionError("refused"))

    with pytest.raises(ServerError) as raised:
        list(client.search("Condition", {}))

    assert len(responses.calls) == 4
    assert "ConnectionError" in str(raised.value)


@responses.activate
def test_404_not_retried(tmp_path):
    time = FakeTime()
    client = client_for(tmp_path, time)
    responses.get(f"{BASE}/Condition", status=404)

    with pytest.raises(ServerError):
        list(client.search("Condition", {}))

    assert len(responses.calls) == 1
    assert time.sleeps == []


def test_retry_after_forms():
    assert retry_after_seconds("120", NOW) == 120.0
    assert retry_after_seconds(format_datetime(datetime.fromtimestamp(NOW - 60, timezone.utc), usegmt=True), NOW) == 0.0
    assert retry_after_seconds("soon", NOW) is None
    assert retry_after_seconds(None, NOW) is None


@responses.activate
def test_query_string_not_logged(tmp_path, caplog):
    client = client_for(tmp_path)
    responses.get(f"{BASE}/Patient", status=503)
    responses.get(f"{BASE}/Patient", json={"resourceType": "Bundle", "type": "searchset"})

    with caplog.at_level(logging.DEBUG, logger="sonco_fhir"):
        list(client.search("Patient", {"identifier": "urn:oid:1.2.250.1.213.1.4.8|179125612113516"}))

    assert "179125612113516" not in caplog.text
    assert f"{BASE}/Patient" in caplog.text


# --- authentication ---


@responses.activate
def test_basic_auth_from_file(tmp_path):
    (tmp_path / "password").write_text("pa55word\n", encoding="utf-8")
    client = client_for(tmp_path, auth={"type": "basic", "username": "sonco", "password_file": "password"})
    responses.get(f"{BASE}/metadata", json={"resourceType": "CapabilityStatement"})

    client.send("GET", client.url("metadata"))

    # base64("sonco:pa55word")
    assert responses.calls[0].request.headers["Authorization"] == "Basic c29uY286cGE1NXdvcmQ="


@responses.activate
def test_bearer_token_from_env(tmp_path, monkeypatch):
    monkeypatch.setenv("EHR_TOKEN", "static-token-1")
    client = client_for(tmp_path, auth={"type": "bearer", "token_env": "EHR_TOKEN"})
    responses.get(f"{BASE}/metadata", json={"resourceType": "CapabilityStatement"})

    client.send("GET", client.url("metadata"))

    assert responses.calls[0].request.headers["Authorization"] == "Bearer static-token-1"


def test_missing_secret_names_place(tmp_path, monkeypatch):
    monkeypatch.delenv("EHR_TOKEN", raising=False)
    client = client_for(tmp_path, auth={"type": "bearer", "token_env": "EHR_TOKEN"})

    with pytest.raises(ConfigurationError) as raised:
        client.send("GET", client.url("metadata"))

    assert "EHR_TOKEN" in str(raised.value)


def smart_client(tmp_path, monkeypatch, time, algorithm="RS384"):
    if algorithm == "RS384":
        private_pem, public_key = rsa_key_pair()
    else:
        key = ec.generate_private_key(ec.SECP384R1())
        private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()).decode()
        public_key = key.public_key()
    monkeypatch.setenv("EHR_PRIVATE_KEY", private_pem)
    auth = {"type": "smart-backend", "token_url": TOKEN_URL, "client_id": "sonco-cohort", "private_key_env": "EHR_PRIVATE_KEY",
            "key_id": "key-1", "algorithm": algorithm, "scope": "system/Condition.rs"}
    return client_for(tmp_path, time, auth=auth), public_key


@responses.activate
@pytest.mark.parametrize("algorithm", ["RS384", "ES384"])
def test_smart_assertion_signed(tmp_path, monkeypatch, algorithm):
    time = FakeTime()
    client, public_key = smart_client(tmp_path, monkeypatch, time, algorithm)
    token_call = responses.post(TOKEN_URL, json={"access_token": "token-1", "expires_in": 300, "token_type": "bearer"})
    responses.get(f"{BASE}/Condition", json=searchset(["a"]))

    list(client.search("Condition", {}))

    form = token_form(token_call.calls[0])
    assert form["grant_type"] == "client_credentials"
    assert form["client_assertion_type"] == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    assert form["scope"] == "system/Condition.rs"
    assert jwt.get_unverified_header(form["client_assertion"])["kid"] == "key-1"
    claims = jwt.decode(form["client_assertion"], public_key, algorithms=[algorithm], audience=TOKEN_URL,
                        options={"verify_exp": False, "verify_iat": False})
    assert claims["iss"] == "sonco-cohort"
    assert claims["sub"] == "sonco-cohort"
    assert claims["exp"] == int(NOW) + 300
    assert responses.calls[1].request.headers["Authorization"] == "Bearer token-1"


@responses.activate
def test_smart_token_reused_then_renewed(tmp_path, monkeypatch):
    time = FakeTime()
    client, _ = smart_client(tmp_path, monkeypatch, time)
    responses.post(TOKEN_URL, json={"access_token": "token-1", "expires_in": 300})
    responses.get(f"{BASE}/Condition", json=searchset(["a"]))

    list(client.search("Condition", {}))
    time.now += 200  # 100 s left: more than the 60 s margin, the token is reused
    list(client.search("Condition", {}))
    responses.replace(responses.POST, TOKEN_URL, json={"access_token": "token-2", "expires_in": 300})
    time.now += 50  # 50 s left: within the margin, a new token is requested before the request
    list(client.search("Condition", {}))

    authorizations = fhir_authorizations()
    assert authorizations == ["Bearer token-1", "Bearer token-1", "Bearer token-2"]
    assert len([call for call in responses.calls if call.request.url == TOKEN_URL]) == 2


@responses.activate
def test_smart_token_expiry_mid_paging(tmp_path, monkeypatch):
    time = FakeTime()
    client, _ = smart_client(tmp_path, monkeypatch, time)
    responses.post(TOKEN_URL, json={"access_token": "token-1", "expires_in": 120})
    responses.post(TOKEN_URL, json={"access_token": "token-2", "expires_in": 120})

    def page_one(request):
        time.now += 90  # the server is slow: the token expires within the margin during this page
        return 200, {}, json.dumps(searchset(["a"], f"{BASE}/Condition?page=2"))

    responses.add_callback(responses.GET, f"{BASE}/Condition", callback=page_one,
                           match=[responses.matchers.query_param_matcher({})])
    responses.get(f"{BASE}/Condition", match=[responses.matchers.query_param_matcher({"page": "2"})], json=searchset(["b"]))

    assert ids_of(client.search("Condition", {})) == ["a", "b"]
    authorizations = fhir_authorizations()
    assert authorizations == ["Bearer token-1", "Bearer token-2"]


@responses.activate
def test_401_renews_token_once(tmp_path, monkeypatch):
    time = FakeTime()
    client, _ = smart_client(tmp_path, monkeypatch, time)
    responses.post(TOKEN_URL, json={"access_token": "revoked", "expires_in": 300})
    responses.post(TOKEN_URL, json={"access_token": "token-2", "expires_in": 300})
    responses.get(f"{BASE}/Condition", status=401)
    responses.get(f"{BASE}/Condition", json=searchset(["a"]))

    assert ids_of(client.search("Condition", {})) == ["a"]
    authorizations = fhir_authorizations()
    assert authorizations == ["Bearer revoked", "Bearer token-2"]


@responses.activate
def test_second_401_not_retried(tmp_path, monkeypatch):
    time = FakeTime()
    client, _ = smart_client(tmp_path, monkeypatch, time)
    responses.post(TOKEN_URL, json={"access_token": "token", "expires_in": 300})
    responses.get(f"{BASE}/Condition", status=401)

    with pytest.raises(ServerError) as raised:
        list(client.search("Condition", {}))

    assert "401" in str(raised.value)
    assert len([call for call in responses.calls if call.request.method == "GET"]) == 2


@responses.activate
def test_token_error_names_url_not_secret(tmp_path, monkeypatch, caplog):
    time = FakeTime()
    client, _ = smart_client(tmp_path, monkeypatch, time)
    responses.post(TOKEN_URL, status=400, json={"error": "invalid_client"})

    with caplog.at_level(logging.DEBUG), pytest.raises(ServerError) as raised:
        client.send("GET", client.url("metadata"))

    assert TOKEN_URL in str(raised.value)
    assert "400" in str(raised.value)
    assert "PRIVATE KEY" not in caplog.text + str(raised.value)


def test_client_certificate_passed_to_requests(tmp_path):
    client = client_for(tmp_path, tls={"client_certificate": "client.crt", "client_key": "client.key", "ca_bundle": "ca.pem"})

    assert client.session.cert == (str(tmp_path / "client.crt"), str(tmp_path / "client.key"))
    assert client.session.verify == str(tmp_path / "ca.pem")


# --- bulk export ---


def ndjson(*resources) -> str:
    return "\n".join(json.dumps(resource) for resource in resources) + "\n"


@responses.activate
def test_bulk_export_polls_and_downloads(tmp_path):
    time = FakeTime()
    client = client_for(tmp_path, time, bulk_export={"group": "cohort"})
    kickoff = responses.get(f"{BASE}/Group/cohort/$export", status=202,
                            headers={"Content-Location": "/fhir/$export-poll-status?_jobId=42"})
    responses.get(f"{BASE}/$export-poll-status", status=202, headers={"Retry-After": "5", "X-Progress": "50%"})
    responses.get(f"{BASE}/$export-poll-status", json={
        "transactionTime": "2026-01-02T03:04:05Z",
        "output": [{"type": "Patient", "url": f"{BASE}/Binary/p"}, {"type": "Condition", "url": "/fhir/Binary/c"}],
        "error": [],
    })
    responses.get(f"{BASE}/Binary/p", body=ndjson({"resourceType": "Patient", "id": "p1"}))
    responses.get(f"{BASE}/Binary/c", body=ndjson({"resourceType": "Condition", "id": "c1"}, {"resourceType": "Condition", "id": "c2"}))

    result = group_export(client, "cohort", ["Patient", "Condition"], "2026-01-01T00:00:00Z")

    query = parse_qs(urlsplit(kickoff.calls[0].request.url).query)
    assert query["_since"] == ["2026-01-01T00:00:00Z"]
    assert query["_type"] == ["Patient,Condition"]
    assert kickoff.calls[0].request.headers["Prefer"] == "respond-async"
    assert time.sleeps == [5.0]
    assert result.transaction_time == "2026-01-02T03:04:05Z"
    assert [(resource["resourceType"], resource["id"]) for _, resource, _ in result.documents] == [
        ("Patient", "p1"), ("Condition", "c1"), ("Condition", "c2")]
    assert [source["line"] for _, _, source in result.documents] == [1, 1, 2]


@responses.activate
@pytest.mark.parametrize("status", [400, 404, 501])
def test_bulk_export_unsupported(tmp_path, status):
    client = client_for(tmp_path, bulk_export={"group": "cohort"})
    responses.get(f"{BASE}/Group/cohort/$export", status=status)

    with pytest.raises(BulkExportUnsupported) as raised:
        group_export(client, "cohort", ["Patient"], None)

    assert raised.value.status == status


@responses.activate
def test_bulk_export_failed_status(tmp_path):
    client = client_for(tmp_path)
    responses.get(f"{BASE}/Group/cohort/$export", status=202, headers={"Content-Location": f"{BASE}/status/1"})
    responses.get(f"{BASE}/status/1", status=500)

    with pytest.raises(ServerError) as raised:
        group_export(client, "cohort", ["Patient"], None)

    assert "500" in str(raised.value)


# --- code tables ---


def test_untranslated_local_code_counted(tmp_path):
    from collections import Counter
    from pathlib import Path

    from sonco_fhir.config import load_settings
    from sonco_fhir.connectors.fhir_rest import _UntranslatedCodes
    from sonco_fhir.pipeline import build_engine, map_source

    data = Path(__file__).resolve().parent / "data" / "fhir_ehr"
    observation = json.loads((data / "changes" / "Observation-frcore-hemoglobin.json").read_text(encoding="utf-8"))
    observation["code"] = {"coding": [{"system": "https://ehr.chu-example.fr/fhir/CodeSystem/local-lab", "code": "GLY"},
                                      {"system": "https://ehr.chu-example.fr/fhir/CodeSystem/local-lab", "code": "HB"}]}
    observation["subject"] = {"identifier": {"system": "http://hospital.example.org",
                                             "type": {"coding": [{"code": "MR"}]}, "value": "m123"}}
    path = tmp_path / "observation.json"
    path.write_text(json.dumps(observation), encoding="utf-8")
    settings = load_settings()
    engine = build_engine(settings, read_only=True)
    untranslated = Counter()
    engine.conceptmaps = _UntranslatedCodes(engine.conceptmaps, untranslated)

    mapped, summary = map_source("fhir", [path], settings, engine)

    assert summary.problems == []
    assert untranslated == Counter({("fhir-local-lab-example", "GLY"): 1})


def test_deleted_patient_key_masked():
    from sonco_fhir.cli.pull_commands import _masked

    assert _masked("https://ehr.test/fhir|Patient/6106172") == "https://ehr.test/fhir|Patient/…"
    assert _masked("https://ehr.test/fhir|Condition/c1") == "https://ehr.test/fhir|Condition/c1"
