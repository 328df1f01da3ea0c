"""The main job: read a source, map each record, and load it, set aside what fails."""

import logging
from dataclasses import dataclass, field
from pathlib import Path

from .config import Settings
from .connectors import fhir as fhir_connector
from .connectors import hl7v2 as hl7v2_connector
from .connectors import tabular
from .connectors.base import ReadResult
from .errors import ExitCode, Problem, SoncoError
from .i18n import t
from .loading.bundle import transaction_bundle
from .loading.hapi import BundleRejected, FhirServer
from .loading.patients import merge_patient
from .mapping.engine import MappedRecord, MappingEngine
from .privacy.crosswalk import Crosswalk
from .privacy.pseudonym import Pseudonymiser, load_key

log = logging.getLogger(__name__)

SOURCE_KINDS = ("hl7v2", "fhir", "spice", "hygen")


@dataclass
class RunSummary:
    records_read: int = 0
    records_parsed: int = 0  # read without a connector problem
    records_mapped: int = 0
    records_loaded: int = 0
    resources: int = 0
    problems: list[Problem] = field(default_factory=list)
    loading: bool = False

    @property
    def exit_code(self) -> ExitCode:
        if self.records_parsed == 0:
            return ExitCode.INPUT_UNREADABLE
        return ExitCode.RECORDS_REJECTED if self.records_rejected else ExitCode.OK

    @property
    def records_rejected(self) -> int:
        return self.records_read - (self.records_loaded if self.loading else self.records_mapped)


def check_kind(kind: str) -> None:
    if kind not in SOURCE_KINDS:
        raise SoncoError(t("input.unknown_kind", kind=kind, known=", ".join(SOURCE_KINDS)), ExitCode.USAGE)


def read_source(kind: str, paths: list[Path], settings: Settings) -> ReadResult:
    check_kind(kind)
    missing = [str(path) for path in paths if not path.exists()]
    if missing:
        raise SoncoError(t("input.not_found", paths=", ".join(missing)), ExitCode.INPUT_UNREADABLE)
    if kind == "hl7v2":
        return hl7v2_connector.read_files(paths)
    if kind == "fhir":
        return fhir_connector.read_files(paths)
    return tabular.read_files(kind, paths, settings)  # spice or hygen, as check_kind made sure


def build_engine(settings: Settings, read_only: bool) -> MappingEngine:
    key = load_key(settings.key_file)
    crosswalk = Crosswalk(settings.crosswalk_file, read_only=read_only)
    return MappingEngine(settings.mappings_dir, Pseudonymiser(key), crosswalk)


def map_source(kind: str, paths: list[Path], settings: Settings, engine: MappingEngine) -> tuple[list[MappedRecord], RunSummary]:
    return map_read(read_source(kind, paths, settings), engine)


def map_read(read: ReadResult, engine: MappingEngine) -> tuple[list[MappedRecord], RunSummary]:
    """Map the records a connector read (files, or an API poll), counting them in a RunSummary."""
    summary = RunSummary(records_read=len(read.records) + len(read.problems), records_parsed=len(read.records),
                         problems=list(read.problems))
    mapped_records = []
    for record in read.records:
        mapped = engine.map_record(record)
        if mapped.problems:
            summary.problems.extend(mapped.problems)
            continue
        summary.records_mapped += 1
        mapped_records.append(mapped)
    return mapped_records, summary


def merged_bundle(mapped_records: list[MappedRecord]) -> dict:
    """Merge the records into one transaction bundle with every resource once, as `map` prints it."""
    by_id: dict[tuple[str, str], dict] = {}
    for mapped in mapped_records:
        for resource in mapped.resources:
            key = (resource["resourceType"], resource["id"])
            if resource["resourceType"] == "Patient" and key in by_id:
                resource = merge_patient(by_id[key], resource)
            by_id[key] = resource
    return transaction_bundle(list(by_id.values()))


def load_records(mapped_records: list[MappedRecord], server: FhirServer, summary: RunSummary) -> None:
    """Load each record in its own transaction, so one rejected record does not stop the others."""
    summary.loading = True
    for mapped in mapped_records:
        resources = []
        for resource in mapped.resources:
            if resource["resourceType"] == "Patient":
                existing = server.read("Patient", resource["id"])
                if existing is not None:
                    resource = merge_patient(existing, resource)
            resources.append(resource)
        try:
            server.transaction(transaction_bundle(resources))
        except BundleRejected as rejection:
            summary.problems.append(
                Problem(mapped.record.origin, mapped.record.position, t("problem.rejected_by_server", reason=rejection),
                        t("problem.rejected_by_server.fix"))
            )
            continue
        summary.records_loaded += 1
        summary.resources += len(resources)
