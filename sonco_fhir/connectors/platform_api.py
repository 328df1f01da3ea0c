"""REST polling of the SPICE and HYGEN platforms: the `api` section of `connectors/<kind>.yaml`.

Neither platform publishes an API, so the section describes the interface
SONCO proposes, and each key can follow what a site offers. One GET per
page of each endpoint (`endpoints`: file kind -> path), in the contract's
file order, with the last modification date already loaded as a query
parameter; pages are followed through the `next_member` link. Records go
through the same contract checks as file exports.

Authentication is a bearer token (from an environment variable or a file,
or obtained from an OAuth2 `token_url` with client credentials) or a client
certificate. Secrets come from the environment or files named there and
are never written to a log or a message.

Retries: urllib3's Retry repeats a GET on 500, 502, 503 and 504 with
exponential backoff. A 429 waits for its Retry-After, capped by
`max_retry_after_seconds`. A 401 gets a new token once.
"""

import json
import logging
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Callable
from urllib.parse import urljoin

import requests
from requests.adapters import HTTPAdapter
from urllib3.util import Retry

from ..errors import ConfigurationError, ExitCode, SoncoError
from ..i18n import t

log = logging.getLogger(__name__)

AUTH_TYPES = ("token", "client_certificate")
RETRIED_STATUSES = (500, 502, 503, 504)
# Refresh an OAuth2 token this long before it expires, so a page request does not race the expiry.
TOKEN_MARGIN_SECONDS = 30


class PlatformApiError(SoncoError):
    """The platform API failed: missing settings (exit 3), unreachable or refusing (exit 4), or an invalid response (exit 6).

    The exit codes are those of `pull` and `ingest` for the same kinds of failure.
    """

    def __init__(self, message: str, exit_code: ExitCode = ExitCode.SERVER_UNAVAILABLE):
        super().__init__(message, exit_code)


@dataclass
class ApiConfig:
    url_env: str
    endpoints: dict[str, str]
    auth: dict = field(default_factory=dict)
    page_size: int = 200
    page_size_param: str = "taille"
    modified_since_param: str = "modifie_depuis"
    records_member: str = "elements"
    next_member: str = "suivant"
    modified_member: str = "date_modification"
    timeout_seconds: float = 30
    max_retries: int = 3
    backoff_factor: float = 1.0
    max_retry_after_seconds: float = 120
    max_pages: int = 1000


def load_api_config(path: Path, section) -> ApiConfig:
    """Check the `api` section of a connector definition; raise ConfigurationError naming the mistake."""
    if not isinstance(section, dict):
        raise ConfigurationError(t("poll.no_api", path=path))
    for key in ("url_env", "endpoints", "auth"):
        if not section.get(key):
            raise ConfigurationError(f"{path}: api: missing key '{key}'")
    auth = section["auth"]
    if not isinstance(auth, dict) or auth.get("type") not in AUTH_TYPES:
        raise ConfigurationError(f"{path}: api.auth.type must be one of {', '.join(AUTH_TYPES)}")
    known = set(ApiConfig.__dataclass_fields__)
    unknown = set(section) - known
    if unknown:
        raise ConfigurationError(f"{path}: api: unknown key(s) {', '.join(sorted(unknown))}")
    return ApiConfig(**section)


def _secret(names: dict, env_key: str, file_env_key: str) -> str | None:
    """Read a secret from the variable named by `names[env_key]`, else from the file named by `names[file_env_key]`."""
    variable = names.get(env_key)
    if variable and os.environ.get(variable):
        return os.environ[variable].strip()
    file_variable = names.get(file_env_key)
    if file_variable and os.environ.get(file_variable):
        try:
            return Path(os.environ[file_variable]).read_text(encoding="utf-8").strip()
        except OSError as error:
            raise PlatformApiError(t("poll.secret_unreadable", variable=file_variable, reason=error.strerror), ExitCode.CONFIGURATION) from None
    return None


class PlatformClient:
    """GETs JSON pages from one platform API with authentication and retries."""

    def __init__(self, config: ApiConfig, sleep: Callable[[float], None] = time.sleep):
        self.config = config
        self.sleep = sleep
        base_url = os.environ.get(config.url_env, "").strip()
        if not base_url:
            raise PlatformApiError(t("poll.no_url", variable=config.url_env), ExitCode.CONFIGURATION)
        self.base_url = base_url.rstrip("/") + "/"
        self.session = requests.Session()
        retry = Retry(total=config.max_retries, status_forcelist=RETRIED_STATUSES, allowed_methods=frozenset({"GET"}),
                      backoff_factor=config.backoff_factor, raise_on_status=False, respect_retry_after_header=False)
        self.session.mount("https://", HTTPAdapter(max_retries=retry))
        self.session.mount("http://", HTTPAdapter(max_retries=retry))
        self._token: str | None = None
        self._token_expiry = 0.0
        if config.auth["type"] == "client_certificate":
            self._use_certificate(config.auth)

    def _use_certificate(self, auth: dict) -> None:
        cert, key = os.environ.get(auth.get("cert_file_env", "")), os.environ.get(auth.get("key_file_env", ""))
        if not cert:
            raise PlatformApiError(t("poll.no_certificate", variable=auth.get("cert_file_env", "cert_file_env")), ExitCode.CONFIGURATION)
        self.session.cert = (cert, key) if key else cert
        ca_file = os.environ.get(auth.get("ca_file_env", ""))
        if ca_file:
            self.session.verify = ca_file

    # --- tokens ---

    def _bearer(self, renew: bool) -> str | None:
        auth = self.config.auth
        if auth["type"] != "token":
            return None
        if self._token and not renew and time.monotonic() < self._token_expiry:
            return self._token
        token_url = os.environ.get(auth.get("token_url_env", ""), "").strip()
        if token_url:
            self._token, lifetime = self._client_credentials_token(token_url)
        else:
            self._token = _secret(auth, "token_env", "token_file_env")
            lifetime = float("inf")
            if not self._token:
                raise PlatformApiError(t("poll.no_token", variable=auth.get("token_env", "token_env")), ExitCode.CONFIGURATION)
        self._token_expiry = time.monotonic() + lifetime - TOKEN_MARGIN_SECONDS
        return self._token

    def _client_credentials_token(self, token_url: str) -> tuple[str, float]:
        auth = self.config.auth
        client_id = _secret(auth, "client_id_env", "client_id_file_env")
        client_secret = _secret(auth, "client_secret_env", "client_secret_file_env")
        if not client_id or not client_secret:
            raise PlatformApiError(t("poll.no_client_credentials", variable=auth.get("client_secret_env", "client_secret_env")), ExitCode.CONFIGURATION)
        try:
            response = self.session.post(token_url, data={"grant_type": "client_credentials"}, auth=(client_id, client_secret),
                                         timeout=self.config.timeout_seconds)
        except requests.RequestException as error:
            raise PlatformApiError(t("poll.unreachable", url=token_url, reason=type(error).__name__)) from None
        if response.status_code != 200:
            raise PlatformApiError(t("poll.token_refused", url=token_url, status=response.status_code))
        try:
            content = response.json()
            return str(content["access_token"]), float(content.get("expires_in", 300))
        except (ValueError, KeyError, TypeError):
            raise PlatformApiError(t("poll.bad_token_response", url=token_url), ExitCode.INPUT_UNREADABLE) from None

    # --- pages ---

    def get_json(self, url: str, params: dict | None = None) -> dict:
        """GET one page; on 401 renew the token once, on 429 wait for Retry-After, then raise PlatformApiError."""
        renewed = False
        waits = 0
        while True:
            headers = {"Accept": "application/json"}
            token = self._bearer(renew=False)
            if token:
                headers["Authorization"] = f"Bearer {token}"
            try:
                response = self.session.get(url, params=params, headers=headers, timeout=self.config.timeout_seconds)
            except requests.RequestException as error:
                raise PlatformApiError(t("poll.unreachable", url=url, reason=type(error).__name__)) from None
            if response.status_code == 401 and token and not renewed:
                log.warning("%s: HTTP 401, renewing the token once", url)
                self._bearer(renew=True)
                renewed = True
                continue
            if response.status_code == 429 and waits < self.config.max_retries:
                delay = retry_after_seconds(response.headers.get("Retry-After"), self.config.max_retry_after_seconds)
                log.warning("%s: HTTP 429, waiting %.0f s (attempt %d of %d)", url, delay, waits + 1, self.config.max_retries)
                self.sleep(delay)
                waits += 1
                continue
            if response.status_code != 200:
                key = "poll.http_refused" if response.status_code in (401, 403) else "poll.http_error"
                raise PlatformApiError(t(key, url=url, status=response.status_code))
            try:
                return response.json()
            except ValueError:
                raise PlatformApiError(t("poll.not_json", url=url), ExitCode.INPUT_UNREADABLE) from None

    def pages(self, path: str, since: str | None):
        """Yield (page URL, records) for one endpoint, following the next links, at most `max_pages` pages."""
        config = self.config
        url = urljoin(self.base_url, path)
        params = {config.page_size_param: config.page_size}
        if since:
            params[config.modified_since_param] = since
        for _ in range(config.max_pages):
            page = self.get_json(url, params)
            records = page.get(config.records_member) if isinstance(page, dict) else None
            if not isinstance(records, list):
                raise PlatformApiError(t("poll.no_records", url=url, member=config.records_member), ExitCode.INPUT_UNREADABLE)
            yield url, records
            next_url = page.get(config.next_member)
            if not next_url:
                return
            url, params = urljoin(url, next_url), None
        raise PlatformApiError(t("poll.too_many_pages", url=url, count=config.max_pages), ExitCode.INPUT_UNREADABLE)


def retry_after_seconds(value: str | None, maximum: float) -> float:
    """Seconds to wait from a Retry-After header (delay in seconds or HTTP date), between 1 and `maximum`."""
    if not value:
        return 1.0
    try:
        delay = float(value)
    except ValueError:
        try:
            delay = (parsedate_to_datetime(value) - datetime.now(timezone.utc)).total_seconds()
        except (TypeError, ValueError):
            delay = 1.0
    return min(max(delay, 1.0), maximum)


# --- checkpoint ---


def checkpoint_path(data_dir: Path, kind: str) -> Path:
    return data_dir / f"poll-{kind}.json"


def read_checkpoint(data_dir: Path, kind: str) -> dict[str, str]:
    """Return the last modification date loaded per file kind, or {} before the first poll."""
    path = checkpoint_path(data_dir, kind)
    if not path.is_file():
        return {}
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise ConfigurationError(t("poll.bad_checkpoint", path=path)) from None
    return {str(key): str(value) for key, value in content.items()} if isinstance(content, dict) else {}


def write_checkpoint(data_dir: Path, kind: str, checkpoint: dict[str, str]) -> None:
    """Replace the checkpoint file in one rename, so an interrupted write leaves the old one."""
    path = checkpoint_path(data_dir, kind)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(checkpoint, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    temporary.replace(path)
