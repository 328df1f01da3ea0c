"""Small helpers shared by the tests."""

import json
from pathlib import Path

from sonco_fhir.config import load_settings
from sonco_fhir.pipeline import build_engine, map_source, merged_bundle


def map_files(kind: str, *paths: Path):
    """Map files as `sonco-fhir map` does; return (bundle resources, summary)."""
    settings = load_settings()
    engine = build_engine(settings, read_only=True)
    mapped, summary = map_source(kind, list(paths), settings, engine)
    bundle = merged_bundle(mapped)
    return [entry["resource"] for entry in bundle["entry"]], summary


def of_type(resources: list[dict], resource_type: str) -> list[dict]:
    return [resource for resource in resources if resource["resourceType"] == resource_type]


def component(observation: dict, loinc: str) -> dict:
    for item in observation.get("component", []):
        if any(coding.get("code") == loinc for coding in item["code"]["coding"]):
            return item
    raise AssertionError(f"no component {loinc} in {observation['id']}")


def as_text(resources) -> str:
    return json.dumps(resources, ensure_ascii=False)
