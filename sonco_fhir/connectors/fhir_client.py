"""HTTP client of a hospital FHIR server: authentication, retries and search paging.

Logs name the method, the URL path and the status, never the query string,
because identifier searches carry an INS or IPP there, and never a secret.
"""

import base64
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from email.utils import parsedate_to_datetime
from urllib.parse import urljoin, urlsplit

import jwt
import requests

from ..errors import ServerError
from ..i18n import t
from .fhir_sources import AuthSettings, SourceSettings

log = logging.getLogger(__name__)

FHIR_JSON = "application/fhir+json"
# A token is renewed when it expires within this margin, so that no request leaves with a token about to expire.
TOKEN_REFRESH_MARGIN_SECONDS = 60
ASSERTION_LIFETIME_SECONDS = 300
CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
# Safety stop for servers whose next links never repeat and never end.
MAX_PAGES = 10_000


def url_path(url: str) -> str:
    """Return the URL without its query string, which may hold a patient identifier."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


class Authenticator:
    """Authorization header of a source. `refresh` renews a renewable credential after a 401."""

    can_refresh = False

    def headers(self) -> dict[str, str]:
        return {}

    def refresh(self) -> None:
        pass


class BasicAuthenticator(Authenticator):
    def __init__(self, settings: AuthSettings):
        self.settings = settings

    def headers(self) -> dict[str, str]:
        # RFC 7617 with UTF-8, as requests' HTTPBasicAuth encodes str credentials.
        credentials = f"{self.settings.username}:{self.settings.password.read()}".encode("utf-8")
        return {"Authorization": "Basic " + base64.b64encode(credentials).decode("ascii")}


class BearerAuthenticator(Authenticator):
    def __init__(self, settings: AuthSettings):
        self.settings = settings

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.settings.token.read()}"}


class SmartBackendAuthenticator(Authenticator):
    """SMART Backend Services: client_credentials grant with a JWT assertion signed by the client's private key."""

    can_refresh = True

    def __init__(self, settings: AuthSettings, client: "FhirClient", clock: Callable[[], float]):
        self.settings = settings
        self.client = client
        self.clock = clock
        self.access_token: str | None = None
        self.expires_at = 0.0

    def headers(self) -> dict[str, str]:
        if self.access_token is None or self.clock() >= self.expires_at - TOKEN_REFRESH_MARGIN_SECONDS:
            self._request_token()
        return {"Authorization": f"Bearer {self.access_token}"}

    def refresh(self) -> None:
        self.access_token = None

    def _assertion(self) -> str:
        now = int(self.clock())
        claims = {
            "iss": self.settings.client_id,
            "sub": self.settings.client_id,
            "aud": self.settings.token_url,
            "iat": now,
            "exp": now + ASSERTION_LIFETIME_SECONDS,
            "jti": str(uuid.uuid4()),
        }
        headers = {"kid": self.settings.key_id} if self.settings.key_id else None
        return jwt.encode(claims, self.settings.private_key.read(), algorithm=self.settings.algorithm, headers=headers)

    def _request_token(self) -> None:
        form = {
            "grant_type": "client_credentials",
            "client_assertion_type": CLIENT_ASSERTION_TYPE,
            "client_assertion": self._assertion(),
        }
        if self.settings.scope:
            form["scope"] = self.settings.scope
        response = self.client.send("POST", self.settings.token_url, data=form, authenticate=False,
                                    headers={"Accept": "application/json"})
        try:
            body = response.json()
            token, lifetime = body["access_token"], float(body.get("expires_in", 300))
        except (ValueError, KeyError, TypeError):
            raise ServerError(t("pull.token_failed", url=url_path(self.settings.token_url), status=response.status_code)) from None
        self.access_token = token
        self.expires_at = self.clock() + lifetime
        log.info("Access token obtained from %s, valid %s s", url_path(self.settings.token_url), int(lifetime))


class FhirClient:
    """Requests to one source, with its authentication, TLS settings and retry policy.

    `sleep` and `clock` are injectable so that tests do not wait.
    """

    def __init__(self, source: SourceSettings, session: requests.Session | None = None,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.time):
        self.source = source
        self.session = session or requests.Session()
        self.sleep = sleep
        self.clock = clock
        self.retries = 0
        tls = source.tls
        if tls.client_certificate is not None:
            self.session.cert = (str(tls.client_certificate), str(tls.client_key)) if tls.client_key else str(tls.client_certificate)
        if tls.ca_bundle is not None:
            self.session.verify = str(tls.ca_bundle)
        self.auth = self._authenticator(source.auth)

    def _authenticator(self, settings: AuthSettings) -> Authenticator:
        if settings.type == "basic":
            return BasicAuthenticator(settings)
        if settings.type == "bearer":
            return BearerAuthenticator(settings)
        if settings.type == "smart-backend":
            return SmartBackendAuthenticator(settings, self, self.clock)
        return Authenticator()

    def url(self, link: str) -> str:
        """Resolve a link (absolute, host-relative or relative) against the source's base URL."""
        return urljoin(self.source.base_url + "/", link)

    # --- one request, with retries ---

    def send(self, method: str, url: str, params: dict | None = None, headers: dict | None = None,
             data: dict | None = None, authenticate: bool = True) -> requests.Response:
        """Send a request, retrying 429, 5xx, timeouts and connection errors, and renewing the token once after a 401.

        Returns the last response, whatever its status, once the retries are spent.
        Raises ServerError when the server cannot be reached after every attempt.
        """
        policy = self.source.retry
        attempt = 0
        refreshed = False
        while True:
            attempt += 1
            request_headers = {"Accept": FHIR_JSON, **(headers or {})}
            if authenticate:
                request_headers.update(self.auth.headers())
            try:
                response = self.session.request(method, url, params=params, headers=request_headers, data=data,
                                                timeout=self.source.timeout_seconds)
            except (requests.Timeout, requests.ConnectionError) as error:
                if attempt >= policy.max_attempts:
                    raise ServerError(t("pull.unreachable", url=url_path(url), attempts=attempt, reason=type(error).__name__)) from None
                self._wait(self._backoff(attempt), url, type(error).__name__, attempt)
                continue

            if response.status_code == 401 and authenticate and self.auth.can_refresh and not refreshed:
                refreshed = True
                log.warning("%s %s: 401, renewing the access token and sending again", method, url_path(url))
                self.auth.refresh()
                continue
            if response.status_code == 429 or response.status_code >= 500:
                if attempt >= policy.max_attempts:
                    return response
                wait = None
                if response.status_code in (429, 503):
                    wait = retry_after_seconds(response.headers.get("Retry-After"), self.clock())
                self._wait(self._backoff(attempt) if wait is None else wait, url, f"HTTP {response.status_code}", attempt)
                continue
            return response

    def _backoff(self, attempt: int) -> float:
        policy = self.source.retry
        return min(policy.max_wait_seconds, policy.backoff_seconds * 2 ** (attempt - 1))

    def _wait(self, seconds: float, url: str, reason: str, attempt: int) -> None:
        seconds = max(0.0, min(seconds, self.source.retry.max_wait_seconds))
        self.retries += 1
        log.warning("%s: %s, attempt %s of %s, next in %.1f s", url_path(url), reason, attempt,
                    self.source.retry.max_attempts, seconds)
        self.sleep(seconds)

    def get_json(self, url: str, params: dict | None = None, what: str = "") -> dict:
        response = self.send("GET", url, params=params)
        if response.status_code != 200:
            raise ServerError(t("pull.request_failed", url=url_path(url), status=response.status_code,
                                reason=_status_text(response)))
        try:
            return response.json()
        except ValueError:
            raise ServerError(t("pull.not_json", url=url_path(url))) from None

    # --- searches ---

    def search(self, resource_type: str, params: dict) -> Iterator[dict]:
        """Yield the searchset Bundles of a search, following `Bundle.link[next]` as the server gives it.

        Paging stops when a page has no next link, or when the next link is one already
        followed (a server that loops back to an earlier page).
        """
        url, query = self.url(resource_type), params
        followed = {requests.Request("GET", url, params=query).prepare().url}
        for _ in range(MAX_PAGES):
            bundle = self.get_json(url, query)
            yield bundle
            link = next_link(bundle)
            if link is None:
                return
            url, query = self.url(link), None
            if url in followed:
                log.warning("%s: the next link repeats an earlier page; paging stops", url_path(url))
                return
            followed.add(url)
        log.warning("%s: paging stopped after %s pages", resource_type, MAX_PAGES)


def next_link(bundle: dict) -> str | None:
    for link in bundle.get("link") or []:
        if isinstance(link, dict) and link.get("relation") == "next" and isinstance(link.get("url"), str) and link["url"]:
            return link["url"]
    return None


def retry_after_seconds(value: str | None, now: float) -> float | None:
    """Read a Retry-After header: a number of seconds or an HTTP date. Returns None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - now)


def _status_text(response: requests.Response) -> str:
    """Return the HTTP reason. OperationOutcome diagnostics are left out, since they may echo a searched identifier."""
    return response.reason or ""
