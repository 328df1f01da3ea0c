"""Canonical URLs of SONCO conformance resources and identifier namespaces.

Every profile, CodeSystem, NamingSystem and Measure the project owns lives
under CANONICAL_BASE. `sonco.example` is a reserved example domain: the
cohort replaces it with its own domain before production, in one place.
"""

CANONICAL_BASE = "https://sonco.example/fhir"

PSEUDONYM_SYSTEM = f"{CANONICAL_BASE}/NamingSystem/sonco-pseudonym"
MAPPING_TAG_SYSTEM = f"{CANONICAL_BASE}/CodeSystem/sonco-mapping"


def profile_url(name: str) -> str:
    return name if "://" in name else f"{CANONICAL_BASE}/StructureDefinition/{name}"


def measure_url(name: str) -> str:
    return f"{CANONICAL_BASE}/Measure/{name}"
