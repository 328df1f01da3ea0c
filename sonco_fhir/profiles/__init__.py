"""SONCO conformance resources: reading them, packaging them as a FHIR package, documenting them.

The resources themselves are JSON files under `profiles/` (one resource per file), which the HAPI
server loads at start. This package only reads them.
"""

import json
from pathlib import Path

from ..canonical import CANONICAL_BASE

PACKAGE_NAME = "sonco.fhir.profiles"
PACKAGE_VERSION = "0.1.0"
FHIR_VERSION = "4.0.1"

EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"

# Resource types of a FHIR package's conformance content, in the order a server should load them.
CONFORMANCE_TYPES = ("CodeSystem", "ValueSet", "NamingSystem", "StructureDefinition", "SearchParameter", "Measure")


class ConformanceError(ValueError):
    """Error raised for a file under the profiles folder that is not a usable conformance resource."""


def read_resources(directory: Path) -> list[tuple[Path, dict]]:
    """Read every `*.json` below `directory`, sorted by path.

    Raises ConformanceError for a file that is not JSON, has no resourceType or id, or repeats
    the type and id of another file.
    """
    found: list[tuple[Path, dict]] = []
    seen: dict[tuple[str, str], Path] = {}
    for path in sorted(directory.rglob("*.json")):
        try:
            resource = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise ConformanceError(f"{path}: invalid JSON ({error}); fix the file") from error
        if not isinstance(resource, dict) or "resourceType" not in resource or not resource.get("id"):
            raise ConformanceError(f"{path}: not a FHIR resource with a resourceType and an id")
        key = (resource["resourceType"], resource["id"])
        if key in seen:
            raise ConformanceError(f"{path}: {key[0]}/{key[1]} is also defined in {seen[key]}; ids must be unique per type")
        seen[key] = path
        found.append((path, resource))
    return found


def load_order(resource: dict) -> int:
    """Return the position of the resource's type in CONFORMANCE_TYPES; other types come last."""
    resource_type = resource["resourceType"]
    return CONFORMANCE_TYPES.index(resource_type) if resource_type in CONFORMANCE_TYPES else len(CONFORMANCE_TYPES)


def translation(element: dict | None, language: str) -> str | None:
    """Return the `translation` extension content for `language` on a primitive's `_element`, if any."""
    for extension in (element or {}).get("extension", []):
        if extension.get("url") != "http://hl7.org/fhir/StructureDefinition/translation":
            continue
        parts = {part["url"]: part for part in extension.get("extension", [])}
        if parts.get("lang", {}).get("valueCode") == language:
            return parts.get("content", {}).get("valueString")
    return None


def localized(resource: dict, name: str, language: str) -> str | None:
    """Return `resource[name]` in `language`: the translation when there is one, else the element itself."""
    if language != "en":
        text = translation(resource.get(f"_{name}"), language)
        if text:
            return text
    return resource.get(name)


__all__ = [
    "CANONICAL_BASE", "CONFORMANCE_TYPES", "ConformanceError", "EXAMPLES_DIR", "FHIR_VERSION", "PACKAGE_NAME",
    "PACKAGE_VERSION", "load_order", "localized", "read_resources", "translation",
]
