"""The Provenance the engine adds to every mapped record."""

from .. import __version__
from ..canonical import CANONICAL_BASE, profile_url

SOURCE_FILE_SYSTEM = f"{CANONICAL_BASE}/NamingSystem/sonco-source-file"

_PARTICIPANT = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"


def provenance_for(record, resources: list[dict], mappings: list, provenance_id: str, file_digest: str,
                   recorded: str | None, source_system: str | None) -> dict:
    """Say where the record came from, and which adapter and mapping versions produced it."""
    versions = ", ".join(f"{m.name}@{m.version}" for m in mappings)
    return {
        "resourceType": "Provenance",
        "id": provenance_id,
        "meta": {"profile": [profile_url("sonco-provenance")]},
        "target": [{"reference": f"{r['resourceType']}/{r['id']}"} for r in resources],
        # The source's own time keeps the Provenance identical when the record is sent again.
        "recorded": recorded or "1970-01-01T00:00:00+00:00",
        "activity": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-DataOperation", "code": "CREATE"}]},
        "agent": [
            {
                "type": {"coding": [{"system": _PARTICIPANT, "code": "assembler"}]},
                "who": {"display": f"sonco-fhir {__version__} ({versions})"},
            },
            {
                "type": {"coding": [{"system": _PARTICIPANT, "code": "author"}]},
                "who": {"display": source_system or record.kind},
            },
        ],
        # File names may hold a patient's name, so the file is named by a keyed digest:
        # the adapter's side recomputes it to trace a resource back to its input.
        "entity": [
            {
                "role": "source",
                "what": {
                    "identifier": {"system": SOURCE_FILE_SYSTEM, "value": file_digest},
                    "display": f"{record.kind} {record.position}",
                },
            }
        ],
    }
