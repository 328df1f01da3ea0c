"""`sonco-fhir pull fhir`: pull the cohort's data from a hospital FHIR R4 server and load it.

The cohort is found at the source by identifier (an INS or IPP list, or the
patients the identity crosswalk already links). Then each patient's data is
searched type by type, or the whole Group is exported with `$export` when the
source declares one. Fetched resources become records through the FHIR
connector (`fhir.read_documents`), so they are mapped by `mappings/fhir/`
and loaded exactly as `ingest fhir` loads files.
"""

import logging
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_to_datetime
from pathlib import Path

from ..config import Settings
from ..errors import ConfigurationError, ServerError
from ..i18n import t
from ..loading.hapi import FhirServer
from ..mapping.engine import MappingEngine
from ..pipeline import RunSummary, load_records
from ..privacy.pseudonym import classify_identifier
from . import fhir as fhir_connector
from .base import ReadResult
from .fhir_bulk import BulkExportUnsupported, group_export
from .fhir_checkpoint import PullState, state_file
from .fhir_client import FhirClient
from .fhir_sources import SourceSettings

log = logging.getLogger(__name__)

# `_lastUpdated=gt` compares with the precision given. The checkpoint is the server's time at the start
# of the run, from its HTTP Date header (whole seconds), minus this margin, so that nothing written
# in the same second as the start is missed. Resources fetched twice are loaded under the same ids.
CHECKPOINT_MARGIN = timedelta(seconds=1)
_HISTORY_KEY = re.compile(r"(?:^|/)(?P<type>[A-Z][A-Za-z]+)/(?P<id>[A-Za-z0-9\-.]{1,64})(?:/_history/[^/]+)?$")


@dataclass
class PullReport:
    source: str
    mode: str = "search"
    resumed: bool = False
    patients: int = 0
    patients_already_done: int = 0
    identifiers_not_found: int = 0
    identifiers_ambiguous: int = 0
    resources_fetched: int = 0
    bulk_fallback_status: int | None = None
    deleted: list[str] = field(default_factory=list)
    deletion_check_failed: bool = False
    untranslated: Counter = field(default_factory=Counter)
    retries: int = 0
    run: RunSummary = field(default_factory=lambda: RunSummary(loading=True))


class _UntranslatedCodes:
    """Wraps the engine's code tables to count the codes that a table could not translate."""

    def __init__(self, conceptmaps, counter: Counter):
        self._conceptmaps = conceptmaps
        self._counter = counter

    def names(self) -> list[str]:
        return self._conceptmaps.names()

    def translate(self, table: str, code):
        coding = self._conceptmaps.translate(table, code)
        if coding is None and code not in (None, ""):
            self._counter[(table, str(code))] += 1
        return coding


def pull_definition(source: SourceSettings) -> tuple[fhir_connector.ConnectorDefinition, list[str]]:
    """Return the file connector's definition and the types to search for each patient (never Patient)."""
    definition = fhir_connector.load_definition()
    missing = [name for name in source.resource_types if name not in definition.resource_types]
    if missing:
        raise ConfigurationError(t("pull.type_without_mapping", path=source.path, types=", ".join(missing),
                                   definition=fhir_connector.definition_file()))
    types = source.resource_types or definition.resource_types
    return definition, [name for name in types if name != "Patient"]


def read_identifier_list(path: Path) -> list[tuple[int, str, str]]:
    """Read `system|value` lines, skipping blank lines and `#` comments. Returns (line number, system, value) triples."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise ConfigurationError(t("pull.identifiers_unreadable", path=path, reason=error.strerror)) from None
    identifiers = []
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        system, separator, value = text.partition("|")
        if not separator or not system.strip() or not value.strip():
            raise ConfigurationError(t("pull.identifiers_bad_line", path=path, line=number))
        identifiers.append((number, system.strip(), value.strip()))
    return identifiers


class Puller:
    """One run of `pull fhir` for one source.

    `after_patient` is called with the number of patients done after each one,
    for a progress display (and, in tests, to stop a run midway).
    """

    def __init__(self, source: SourceSettings, settings: Settings, engine: MappingEngine, server: FhirServer,
                 client: FhirClient | None = None, identifiers_file: Path | None = None,
                 after_patient: Callable[[int], None] | None = None):
        self.source = source
        self.settings = settings
        self.engine = engine
        self.server = server
        self.client = client or FhirClient(source)
        self.identifiers_file = identifiers_file or source.identifiers_file
        self.after_patient = after_patient
        self.definition, self.types = pull_definition(source)
        self.report = PullReport(source=source.name)
        self.engine.conceptmaps = _UntranslatedCodes(engine.conceptmaps, self.report.untranslated)
        self.state: PullState | None = None

    def run(self, full: bool = False) -> PullReport:
        self.state = PullState(state_file(self.settings.data_dir, self.source.name))
        try:
            if full:
                self.state.reset()
            self._run()
        finally:
            self.report.retries = self.client.retries
            self.state.close()
        return self.report

    def _run(self) -> None:
        unfinished = self.state.unfinished_run()
        if unfinished:
            self.report.resumed = True
            log.warning(t("pull.resuming", source=self.source.name, started=unfinished[0]))
        else:
            self.state.start_run(self._server_time(), "search")

        types = self.types
        if self.source.bulk_group and self._pull_bulk(types):
            self.report.mode = "bulk"
        else:
            for ordinal, patient in enumerate(self._cohort(), start=1):
                self._pull_patient(patient, ordinal)
        if self.source.detect_deleted:
            self._report_deleted(["Patient", *types])
        self.state.finish_run(["Patient", *types])

    def _server_time(self) -> str:
        """Return the source server's clock (HTTP Date of its CapabilityStatement) minus the margin, as a FHIR instant."""
        response = self.client.send("GET", self.client.url("metadata"))
        if response.status_code != 200:
            raise ServerError(t("pull.request_failed", url=self.client.url("metadata"), status=response.status_code,
                                reason=response.reason or ""))
        try:
            moment = parsedate_to_datetime(response.headers["Date"])
        except (KeyError, TypeError, ValueError):
            moment = datetime.now(timezone.utc)
        return (moment - CHECKPOINT_MARGIN).astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")

    # --- cohort ---

    def _cohort(self) -> list[dict]:
        patients: dict[str, dict] = {}
        if self.identifiers_file is not None:
            for line, system, value in read_identifier_list(self.identifiers_file):
                matches = self._search_all("Patient", {"identifier": f"{system}|{value}"})
                ids = {patient["id"] for patient in matches}
                if not ids:
                    self.report.identifiers_not_found += 1
                    log.warning("%s line %s: no patient with this identifier at %s", self.identifiers_file, line, self.source.name)
                elif len(ids) > 1:
                    self.report.identifiers_ambiguous += 1
                    log.warning("%s line %s: %s patients share this identifier at %s; none is pulled",
                                self.identifiers_file, line, len(ids), self.source.name)
                else:
                    patients.setdefault(matches[0]["id"], matches[0])
        if self.source.known_patients:
            for patient in self._search_all("Patient", {"_count": self.source.page_size}):
                if patient["id"] not in patients and self._known_to_cohort(patient):
                    patients[patient["id"]] = patient
        return list(patients.values())

    def _search_all(self, resource_type: str, params: dict) -> list[dict]:
        """Return the matches (not the _include results) of a search, every page."""
        found = []
        for bundle in self.client.search(resource_type, params):
            for entry in bundle.get("entry") or []:
                resource = entry.get("resource") if isinstance(entry, dict) else None
                mode = (entry.get("search") or {}).get("mode", "match")
                if isinstance(resource, dict) and resource.get("resourceType") == resource_type and mode == "match":
                    found.append(resource)
        return found

    def _known_to_cohort(self, patient: dict) -> bool:
        """Tell whether the crosswalk already links one of the patient's identifiers (INS, IPP or source key)."""
        pseudonymiser = self.engine.pseudonymiser
        tokens = []
        for identifier in patient.get("identifier") or []:
            entry = fhir_connector.identifier_entry(identifier)
            kind = classify_identifier(entry["system"], entry["type"]) if entry else None
            if kind:
                tokens.append(pseudonymiser.token(kind, entry["system"], entry["value"]))
        key = fhir_connector.namespaced_key(self.source.system, f"Patient/{patient['id']}")
        tokens.append(pseudonymiser.token("SOURCE-REF", self.source.system.removeprefix("urn:oid:"), key))
        return any(self.engine.crosswalk.knows(token) for token in tokens)

    # --- per-patient searches ---

    def _pull_patient(self, patient: dict, ordinal: int) -> None:
        patient_key = fhir_connector.namespaced_key(self.source.system, f"Patient/{patient['id']}")
        if self.state.patient_done_in_run(patient_key):
            self.report.patients_already_done += 1
            return
        incremental = self.state.pulled_before(patient_key)
        # Problems name the patient by its rank in the cohort, because some EHRs use the IPP as Patient.id.
        origin = f"{self.source.name}, patient {ordinal}"
        documents = [(origin, patient, self._source_description("Patient"))]
        self.report.resources_fetched += 1
        for resource_type in self.types:
            params = self._search_params(resource_type, patient["id"], incremental)
            for page in self.client.search(resource_type, params):
                self.report.resources_fetched += sum(1 for entry in page.get("entry") or [] if "resource" in entry)
                documents.append((origin, page, self._source_description(resource_type)))

        read = fhir_connector.read_documents(documents, self.definition, self.source.system, self.state.loaded_keys())
        loaded = self._map_and_load(read)
        self.state.finish_patient(patient_key, loaded)
        self.report.patients += 1
        if self.after_patient is not None:
            self.after_patient(self.report.patients)

    def _search_params(self, resource_type: str, patient_id: str, incremental: bool) -> dict:
        params: dict = {"patient": f"Patient/{patient_id}", "_count": self.source.page_size}
        since = self.state.since(resource_type) if incremental else None
        if since:
            params["_lastUpdated"] = f"gt{since}"
        if self.source.includes.get(resource_type):
            params["_include"] = list(self.source.includes[resource_type])
        if self.source.elements.get(resource_type):
            params["_elements"] = ",".join(self.source.elements[resource_type])
        return params

    def _source_description(self, resource_type: str) -> dict:
        return {"kind": "fhir", "source": self.source.name, "file": f"{self.source.base_url}/{resource_type}"}

    def _map_and_load(self, read: ReadResult) -> list[tuple[str, str]]:
        """Map and load each record in its own transaction. Returns the (source key, type) pairs of the records loaded."""
        summary = self.report.run
        summary.records_read += len(read.records) + len(read.problems)
        summary.records_parsed += len(read.records)
        summary.problems.extend(read.problems)
        loaded = []
        for record in read.records:
            mapped = self.engine.map_record(record)
            if mapped.problems:
                summary.problems.extend(mapped.problems)
                continue
            summary.records_mapped += 1
            before = summary.records_loaded
            load_records([mapped], self.server, summary)
            if summary.records_loaded > before:
                loaded.append((record.data["source"]["key"], record.selector["resource_type"]))
        return loaded

    # --- Group $export ---

    def _pull_bulk(self, types: list[str]) -> bool:
        """Pull with a Group `$export`. Returns False, after a warning, when the server does not support it."""
        checkpoints = [self.state.since(name) for name in ["Patient", *types]]
        since = min(checkpoints) if all(checkpoints) else None
        try:
            export = group_export(self.client, self.source.bulk_group, ["Patient", *types], since)
        except BulkExportUnsupported as unsupported:
            self.report.bulk_fallback_status = unsupported.status
            log.warning(t("pull.bulk_fallback", source=self.source.name, status=unsupported.status))
            return False
        self.report.resources_fetched += len(export.documents)
        read = fhir_connector.read_documents(export.documents, self.definition, self.source.system, self.state.loaded_keys())
        self.state.record_loaded(self._map_and_load(read))
        self.report.patients = sum(1 for _, resource, _ in export.documents if resource.get("resourceType") == "Patient")
        return True

    # --- deletions at the source ---

    def _report_deleted(self, types: list[str]) -> None:
        """Report loaded resources that the source deleted since the last run, from each type's `_history`.

        The cohort server keeps them: a deletion at the source is reported, not applied.
        NOTE: type-level history lists every change at the source since the checkpoint, the
        cohort's or not, so on a large EHR this check reads far more than the cohort's data.
        """
        loaded = self.state.loaded_keys()
        for resource_type in types:
            since = self.state.since(resource_type)
            if not since or not loaded:
                continue
            try:
                pages = list(self.client.search(f"{resource_type}/_history", {"_since": since, "_count": self.source.page_size}))
            except ServerError as error:
                self.report.deletion_check_failed = True
                log.warning("%s: deletions of %s not checked: %s", self.source.name, resource_type, error)
                continue
            for page in pages:
                for entry in page.get("entry") or []:
                    self._check_deleted_entry(entry, loaded)

    def _check_deleted_entry(self, entry: dict, loaded: frozenset[str]) -> None:
        request = entry.get("request") if isinstance(entry, dict) else None
        if not isinstance(request, dict) or request.get("method") != "DELETE":
            return
        match = _HISTORY_KEY.search(str(request.get("url") or entry.get("fullUrl") or ""))
        if match is None:
            return
        key = fhir_connector.namespaced_key(self.source.system, f"{match['type']}/{match['id']}")
        if key in loaded and self.state.mark_deleted(key, datetime.now(timezone.utc).isoformat(timespec="seconds")):
            self.report.deleted.append(key)


def pull(source: SourceSettings, settings: Settings, engine: MappingEngine, server: FhirServer, **options) -> PullReport:
    """Run one pull; `options` are those of Puller and `full` (forget the checkpoints first)."""
    full = options.pop("full", False)
    return Puller(source, settings, engine, server, **options).run(full=full)


def with_identifiers(source: SourceSettings, path: Path | None) -> SourceSettings:
    """Return the source with the identifier list given on the command line, if any."""
    return replace(source, identifiers_file=path) if path is not None else source
