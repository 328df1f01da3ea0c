"""Group-level FHIR Bulk Data `$export`: kick-off, status polling and NDJSON download.

The flow follows the FHIR Bulk Data Access IG (v2.0.0). A kick-off request with
`Prefer: respond-async` returns 202 and a status URL in Content-Location. The
status URL returns 202 (with Retry-After and X-Progress) until the export is
complete, then 200 with a manifest that lists the NDJSON files of the output.
"""

import json
import logging
from dataclasses import dataclass, field

from ..errors import ServerError
from ..i18n import t
from .fhir_client import FhirClient, retry_after_seconds, url_path

log = logging.getLogger(__name__)

DEFAULT_POLL_SECONDS = 2.0
MAX_POLLS = 2_000


class BulkExportUnsupported(Exception):
    """The server rejected the kick-off (4xx or 501): the pull uses per-patient searches instead."""

    def __init__(self, status: int):
        super().__init__(f"HTTP {status}")
        self.status = status


@dataclass
class ExportResult:
    transaction_time: str | None
    # (origin, resource, source description) triples, as fhir.read_documents takes them.
    documents: list[tuple[str, dict, dict]] = field(default_factory=list)
    errors: int = 0


def group_export(client: FhirClient, group: str, resource_types: list[str], since: str | None) -> ExportResult:
    """Run a Group `$export` to the end and return every exported resource.

    Raises BulkExportUnsupported when the kick-off returns 4xx or 501, ServerError
    when the export fails later.
    """
    kickoff_url = client.url(f"Group/{group}/$export")
    params = {"_type": ",".join(resource_types), "_outputFormat": "application/fhir+ndjson"}
    if since:
        params["_since"] = since
    response = client.send("GET", kickoff_url, params=params, headers={"Prefer": "respond-async"})
    if 400 <= response.status_code < 500 or response.status_code == 501:
        raise BulkExportUnsupported(response.status_code)
    status_url = response.headers.get("Content-Location")
    if response.status_code != 202 or not status_url:
        raise ServerError(t("pull.bulk_failed", url=url_path(kickoff_url), status=response.status_code))
    manifest = _poll(client, client.url(status_url))

    result = ExportResult(transaction_time=manifest.get("transactionTime"))
    for output in manifest.get("output") or []:
        _download(client, output, result)
    result.errors = len(manifest.get("error") or [])
    if result.errors:
        log.warning("Bulk export: the server reported %s error file(s), not read", result.errors)
    return result


def _poll(client: FhirClient, status_url: str) -> dict:
    for _ in range(MAX_POLLS):
        response = client.send("GET", status_url)
        if response.status_code == 200:
            try:
                return response.json()
            except ValueError:
                raise ServerError(t("pull.not_json", url=url_path(status_url))) from None
        if response.status_code != 202:
            raise ServerError(t("pull.bulk_failed", url=url_path(status_url), status=response.status_code))
        wait = retry_after_seconds(response.headers.get("Retry-After"), client.clock())
        wait = DEFAULT_POLL_SECONDS if wait is None else min(wait, client.source.retry.max_wait_seconds)
        log.info("Bulk export in progress (%s), next status check in %.0f s", response.headers.get("X-Progress", "-"), wait)
        client.sleep(wait)
    raise ServerError(t("pull.bulk_timeout", url=url_path(status_url), polls=MAX_POLLS))


def _download(client: FhirClient, output: dict, result: ExportResult) -> None:
    url = output.get("url")
    if not isinstance(url, str):
        return
    url = client.url(url)
    response = client.send("GET", url, headers={"Accept": "application/fhir+ndjson"})
    if response.status_code != 200:
        raise ServerError(t("pull.request_failed", url=url_path(url), status=response.status_code, reason=response.reason or ""))
    origin = f"{client.source.name}:$export/{output.get('type', 'output')}"
    for number, line in enumerate(response.text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            resource = json.loads(line)
        except json.JSONDecodeError as error:
            raise ServerError(t("pull.bulk_bad_line", url=url_path(url), line=number, reason=error.msg)) from None
        source = {"kind": "fhir", "source": client.source.name, "file": url_path(url), "line": number}
        result.documents.append((origin, resource, source))
