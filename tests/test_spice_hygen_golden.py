"""SPICE and HYGEN example exports against golden files, then on a real HAPI server.

The golden files `tests/golden/spice.json` and `tests/golden/hygen.json` hold
every resource that `sonco-fhir map` gives for `examples/spice/` and
`examples/hygen/`, sorted by type and id, and each resource is compared whole.
Resource ids are keyed HMACs, so the files are only valid with TEST_KEY below.

To regenerate them after a deliberate change to a mapping, a contract or an
example:

    SONCO_UPDATE_GOLDEN=1 .venv/bin/pytest -q tests/test_spice_hygen_golden.py

The tests that rewrite a file are skipped, never passed. Before accepting
the change, a reviewer reads `git diff tests/golden/` and checks each
changed value against the example export it comes from.
"""

import json
import os
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests
from typer.testing import CliRunner

from sonco_fhir.cli.main import build_app
from sonco_fhir.config import load_settings
from sonco_fhir.pipeline import build_engine, map_source, merged_bundle
from conftest import REPOSITORY, TEST_KEY
from test_end_to_end import snapshot

GOLDEN_DIR = REPOSITORY / "tests" / "golden"
KINDS = ("spice", "hygen")
UPDATE = os.environ.get("SONCO_UPDATE_GOLDEN") == "1"
# A key of their own keeps these resources apart from those of other server tests.
SERVER_KEY = "sonco-golden-key-" + "0123456789abcdef" * 3
# Every type the SPICE and HYGEN mappings write, for the clean-up of the session server.
WRITTEN_TYPES = ("Patient", "Organization", "ServiceRequest", "Condition", "Consent", "Task", "Specimen", "Procedure",
                 "DiagnosticReport", "Observation", "CarePlan", "Provenance")


def mapped_resources(kind: str) -> list[dict]:
    """Map `examples/<kind>` from the repository root, so the source file names in the output are relative."""
    settings = load_settings()
    engine = build_engine(settings, read_only=True)
    mapped, summary = map_source(kind, [Path("examples") / kind], settings, engine)
    assert summary.problems == [], [problem.render() for problem in summary.problems]
    resources = [entry["resource"] for entry in merged_bundle(mapped)["entry"]]
    return sorted(resources, key=lambda resource: (resource["resourceType"], resource["id"]))


@pytest.fixture
def at_repository_root(monkeypatch):
    monkeypatch.chdir(REPOSITORY)
    monkeypatch.setenv("SONCO_PSEUDONYM_KEY", TEST_KEY)


@pytest.mark.parametrize("kind", KINDS)
def test_examples_match_golden(at_repository_root, kind):
    actual = mapped_resources(kind)
    path = GOLDEN_DIR / f"{kind}.json"
    if UPDATE:
        GOLDEN_DIR.mkdir(exist_ok=True)
        path.write_text(json.dumps(actual, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
        pytest.skip(f"{path.name} rewritten: review its diff before accepting it")
    expected = json.loads(path.read_text(encoding="utf-8"))
    expected_ids = [(resource["resourceType"], resource["id"]) for resource in expected]
    actual_ids = [(resource["resourceType"], resource["id"]) for resource in actual]
    assert actual_ids == expected_ids
    for want, got in zip(expected, actual):
        assert got == want, f"{got['resourceType']}/{got['id']} differs from {path.name}"


def test_golden_covers_every_profile():
    profiles = set()
    for kind in KINDS:
        for resource in json.loads((GOLDEN_DIR / f"{kind}.json").read_text(encoding="utf-8")):
            profiles.update(profile.rsplit("/", 1)[-1] for profile in resource.get("meta", {}).get("profile", []))
    assert profiles >= {
        "sonco-patient", "sonco-organization", "sonco-servicerequest", "sonco-condition", "sonco-consent",
        "sonco-task-rcp-amont", "sonco-specimen", "sonco-procedure-sequencing", "sonco-task-sequencing-failure",
        "sonco-diagnosticreport", "sonco-observation-variant", "sonco-observation-biomarker",
        "sonco-observation-fusion", "sonco-observation-copy-number", "sonco-observation-therapeutic-implication",
        "sonco-careplan-rcp-aval", "sonco-provenance",
    }


# --- on the session's HAPI server ---


def ingest(kind: str, path: Path):
    return CliRunner().invoke(build_app(), ["ingest", kind, str(path)])


def validation_errors(base_url: str, resource: dict) -> list[str]:
    """Return the errors of `$validate` against the resource's first meta.profile."""
    response = requests.post(
        f"{base_url}/{resource['resourceType']}/$validate",
        params={"profile": resource["meta"]["profile"][0]},
        data=json.dumps(resource),
        headers={"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"},
        timeout=120,
    )
    outcome = response.json()
    assert outcome.get("resourceType") == "OperationOutcome", f"HTTP {response.status_code}"
    return [issue.get("diagnostics", "") for issue in outcome.get("issue", []) if issue["severity"] in ("error", "fatal")]


@contextmanager
def removed_afterwards(base_url: str):
    """Delete, in one transaction, every resource created on the server inside the block.

    Tests that load the examples with a key of their own would otherwise leave a
    second copy of the cohort on the session server, which other tests count.
    """
    before = snapshot(base_url, WRITTEN_TYPES)
    try:
        yield
    finally:
        after = snapshot(base_url, WRITTEN_TYPES)
        created = [f"{resource_type}/{resource_id}" for resource_type, found in after.items()
                   for resource_id in found if resource_id not in before.get(resource_type, {})]
        if created:
            bundle = {"resourceType": "Bundle", "type": "transaction",
                      "entry": [{"request": {"method": "DELETE", "url": url}} for url in created]}
            response = requests.post(base_url, json=bundle, headers={"Content-Type": "application/fhir+json"}, timeout=300)
            assert response.status_code == 200, f"clean-up failed: HTTP {response.status_code} {response.text[:300]}"


@pytest.fixture
def golden_server(cohort_env, monkeypatch, tmp_path):
    monkeypatch.setenv("SONCO_PSEUDONYM_KEY", SERVER_KEY)
    monkeypatch.setenv("SONCO_DATA_DIR", str(tmp_path / "golden-data"))
    with removed_afterwards(cohort_env):
        yield cohort_env


@pytest.mark.server
@pytest.mark.parametrize("kind", KINDS)
def test_examples_load_and_validate(golden_server, kind):
    result = ingest(kind, REPOSITORY / "examples" / kind)
    assert result.exit_code == 0, result.output

    mapped = mapped_resources_with_key(kind)
    failures = {}
    for resource in mapped:
        stored = requests.get(f"{golden_server}/{resource['resourceType']}/{resource['id']}", timeout=60)
        assert stored.status_code == 200, f"{resource['resourceType']}/{resource['id']} not stored"
        errors = validation_errors(golden_server, stored.json())
        if errors:
            failures[f"{resource['resourceType']}/{resource['id']}"] = errors
    assert failures == {}
    if kind == "hygen":
        assert_allele_frequency_digits_kept(golden_server, mapped)


def assert_allele_frequency_digits_kept(base_url: str, mapped: list[dict]) -> None:
    """HYG-24-0590 sends the PIK3CA allele frequency as 0.350: the server must hold those digits."""
    variant = next(resource for resource in mapped if resource["resourceType"] == "Observation"
                   and any(part.get("valueCodeableConcept", {}).get("text") == "PIK3CA" for part in resource.get("component", [])))
    stored = requests.get(f"{base_url}/Observation/{variant['id']}", headers={"Accept": "application/fhir+json"}, timeout=60)
    frequency = [part for part in stored.json()["component"] if part["code"]["coding"][0]["code"] == "81258-6"]
    assert frequency[0]["valueQuantity"]["value"] == 0.35
    assert '"value": 0.350' in stored.text or '"value":0.350' in stored.text


def mapped_resources_with_key(kind: str) -> list[dict]:
    """Map the examples with the current key (SERVER_KEY in server tests) and return the resources."""
    settings = load_settings()
    engine = build_engine(settings, read_only=True)
    mapped, _ = map_source(kind, [REPOSITORY / "examples" / kind], settings, engine)
    return [entry["resource"] for entry in merged_bundle(mapped)["entry"]]
