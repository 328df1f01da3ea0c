"""Build the SONCO conformance resources into an NPM-style FHIR package (`.tgz`).

    python -m sonco_fhir.profiles.package [--profiles-dir DIR] [--output-dir DIR]

The package contains `package/package.json`, `package/.index.json`, one `<Type>-<id>.json` per
resource of the profiles folder, and the examples under `package/example/`. Its only dependency is
hl7.fhir.r4.core, declared but not bundled. Entries are sorted and dated 1970-01-01, so the same
input gives the same bytes.
"""

import argparse
import gzip
import io
import json
import logging
import sys
import tarfile
from pathlib import Path

from ..config import REPOSITORY, load_settings
from . import (CANONICAL_BASE, EXAMPLES_DIR, FHIR_VERSION, PACKAGE_NAME, PACKAGE_VERSION, ConformanceError,
               load_order, read_resources)

log = logging.getLogger(__name__)

# Index fields of the FHIR NPM package specification, copied when the resource has them.
_INDEX_FIELDS = ("url", "version", "kind", "type", "supplements", "content")


def package_manifest() -> dict:
    """Return the package.json of the SONCO package."""
    return {
        "name": PACKAGE_NAME,
        "version": PACKAGE_VERSION,
        "description": "SONCO cohort conformance resources: profiles, code systems, value sets, naming systems"
                       " and measures for FHIR R4.",
        "author": "SONCO",
        "license": "EUPL-1.2",
        "canonical": CANONICAL_BASE,
        "url": CANONICAL_BASE,
        "fhirVersions": [FHIR_VERSION],
        "type": "fhir.ig",
        "jurisdiction": "urn:iso:std:iso:3166#FR",
        "dependencies": {"hl7.fhir.r4.core": FHIR_VERSION},
    }


def _file_name(resource: dict) -> str:
    return f"{resource['resourceType']}-{resource['id']}.json"


def _index(resources: list[dict]) -> dict:
    files = []
    for resource in resources:
        entry = {"filename": _file_name(resource), "resourceType": resource["resourceType"], "id": resource["id"]}
        entry.update({field: resource[field] for field in _INDEX_FIELDS if field in resource})
        files.append(entry)
    return {"index-version": 1, "files": files}


def _as_bytes(document: dict) -> bytes:
    return (json.dumps(document, ensure_ascii=False, indent=2) + "\n").encode("utf-8")


def package_entries(profiles_dir: Path, examples_dir: Path = EXAMPLES_DIR) -> dict[str, bytes]:
    """Collect the package's files, as a map from path inside the archive to content, in archive order."""
    resources = [resource for _, resource in read_resources(profiles_dir)]
    resources.sort(key=lambda resource: (load_order(resource), resource["resourceType"], resource["id"]))
    examples = [resource for _, resource in read_resources(examples_dir)] if examples_dir.is_dir() else []

    entries = {"package/package.json": _as_bytes(package_manifest()), "package/.index.json": _as_bytes(_index(resources))}
    for resource in resources:
        entries[f"package/{_file_name(resource)}"] = _as_bytes(resource)
    if examples:
        entries["package/example/.index.json"] = _as_bytes(_index(examples))
        for resource in examples:
            entries[f"package/example/{_file_name(resource)}"] = _as_bytes(resource)
    return entries


def write_package(profiles_dir: Path, output_dir: Path, examples_dir: Path = EXAMPLES_DIR) -> Path:
    """Write `<output_dir>/<name>-<version>.tgz` and return its path."""
    entries = package_entries(profiles_dir, examples_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    target = output_dir / f"{PACKAGE_NAME}-{PACKAGE_VERSION}.tgz"

    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, content in entries.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            info.mode = 0o644
            info.mtime = 0
            tar.addfile(info, io.BytesIO(content))
    # gzip's own header carries a time too: mtime=0 keeps the archive reproducible.
    with open(target, "wb") as handle, gzip.GzipFile(filename="", mode="wb", fileobj=handle, mtime=0) as compressed:
        compressed.write(archive.getvalue())
    log.info("Wrote %s (%d files)", target, len(entries))
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sonco_fhir.profiles.package", description=__doc__.split("\n\n")[0])
    parser.add_argument("--profiles-dir", type=Path, default=None,
                        help="folder of conformance resources (default: SONCO_PROFILES_DIR or profiles/)")
    parser.add_argument("--output-dir", type=Path, default=REPOSITORY / "build",
                        help="folder the .tgz is written to (default: build/)")
    arguments = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    profiles_dir = arguments.profiles_dir or load_settings().profiles_dir
    try:
        target = write_package(profiles_dir, arguments.output_dir)
    except ConformanceError as error:
        log.error("Failed to build the FHIR package: %s", error)
        return 1
    print(target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
