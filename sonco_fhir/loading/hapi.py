"""A small FHIR REST client for the cohort's HAPI server, on requests."""

import logging
from typing import Iterator

import requests

from ..errors import ServerError
from ..i18n import t
from .bundle import to_json

log = logging.getLogger(__name__)

FHIR_JSON = "application/fhir+json"
TIMEOUT_SECONDS = 120


class BundleRejected(Exception):
    """The server rejected a transaction; the message is its OperationOutcome text."""

    def __init__(self, status: int, message: str):
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


def outcome_text(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:500]
    issues = body.get("issue", []) if isinstance(body, dict) else []
    texts = [issue.get("diagnostics") or issue.get("details", {}).get("text", "") for issue in issues]
    return "; ".join(text for text in texts if text) or response.reason


class FhirServer:
    def __init__(self, base_url: str):
        self.base_url = base_url.rstrip("/")
        self.session = requests.Session()
        self.session.headers.update({"Accept": FHIR_JSON, "Content-Type": FHIR_JSON})

    def _request(self, method: str, url: str, **kwargs) -> requests.Response:
        if not url.startswith("http"):
            url = f"{self.base_url}/{url}"
        try:
            return self.session.request(method, url, timeout=TIMEOUT_SECONDS, **kwargs)
        except requests.ConnectionError:
            raise ServerError(t("server.unreachable", url=self.base_url)) from None
        except requests.Timeout:
            raise ServerError(t("server.timeout", url=self.base_url, seconds=TIMEOUT_SECONDS)) from None

    def is_up(self) -> bool:
        try:
            return self.session.get(f"{self.base_url}/metadata", timeout=5).status_code == 200
        except requests.RequestException:
            return False

    def read(self, resource_type: str, resource_id: str) -> dict | None:
        response = self._request("GET", f"{resource_type}/{resource_id}")
        if response.status_code in (404, 410):
            return None
        if response.status_code != 200:
            raise ServerError(f"GET {resource_type}/{resource_id}: HTTP {response.status_code}: {outcome_text(response)}")
        return response.json()

    def transaction(self, bundle: dict) -> dict:
        response = self._request("POST", "", data=to_json(bundle).encode("utf-8"))
        if response.status_code in (502, 503, 504):
            raise ServerError(f"HTTP {response.status_code}: {outcome_text(response)}")
        if response.status_code >= 400:
            raise BundleRejected(response.status_code, outcome_text(response))
        return response.json()

    def update(self, resource: dict) -> dict:
        response = self._request("PUT", f"{resource['resourceType']}/{resource['id']}", data=to_json(resource).encode("utf-8"))
        if response.status_code >= 400:
            raise BundleRejected(response.status_code, outcome_text(response))
        return response.json()

    def validate(self, resource: dict, profile: str | None = None) -> dict:
        params = {"profile": profile} if profile else None
        response = self._request("POST", f"{resource['resourceType']}/$validate", params=params, json=resource)
        return response.json()

    def search(self, resource_type: str, params: dict | None = None) -> Iterator[dict]:
        """Yield every resource of a search, following `next` links; bypasses HAPI's search cache."""
        url = resource_type
        query = dict(params or {})
        query.setdefault("_count", "1000")
        seen: set[str] = set()
        while url:
            response = self._request("GET", url, params=query, headers={"Cache-Control": "no-cache"})
            if response.status_code != 200:
                raise ServerError(f"GET {resource_type}: HTTP {response.status_code}: {outcome_text(response)}")
            bundle = response.json()
            for entry in bundle.get("entry", []):
                if entry.get("search", {}).get("mode", "match") == "match":
                    yield entry["resource"]
            next_links = [link["url"] for link in bundle.get("link", []) if link.get("relation") == "next"]
            url = next_links[0] if next_links and next_links[0] not in seen else None
            if url:
                seen.add(url)
            query = None
