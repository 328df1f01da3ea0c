"""SPICE and HYGEN exports loaded again on a real HAPI server: updates make new versions, never duplicates.

The first load is examples/spice/ and examples/hygen/; a second load of the
same exports must change no versionId. Then a later export amends the report
of DEM-2024-01012 (new conclusion, TMB 1,2 -> 1,4) and changes its RCP d'aval
recommendation from no actionable alteration to a clinical trial; HYGEN
amends the report of HYG-24-0590 and adds its RCP d'aval.
"""

import copy
import csv
import json
import shutil

import pytest
import requests
from typer.testing import CliRunner

from sonco_fhir.cli.main import build_app
from conftest import REPOSITORY
from test_end_to_end import snapshot
from test_spice_hygen_golden import removed_afterwards

pytestmark = pytest.mark.server

TYPES = ("Patient", "ServiceRequest", "Condition", "Consent", "Task", "Specimen", "Procedure",
         "DiagnosticReport", "Observation", "CarePlan", "Provenance")
# A key of their own keeps these resources apart from those of other server tests.
INCREMENTAL_KEY = "sonco-incremental-key-" + "fedcba9876543210" * 3


def ingest(kind, path):
    result = CliRunner().invoke(build_app(), ["ingest", kind, str(path)])
    assert result.exit_code == 0, result.output
    return result


def versions(base_url: str) -> dict[str, str]:
    """Return `Type/id` -> versionId of every resource of TYPES on the server."""
    by_type = snapshot(base_url, TYPES)
    return {f"{resource_type}/{resource_id}": version
            for resource_type, found in by_type.items() for resource_id, version in found.items()}


def loaded_request(base_url, runs, identifier):
    """Return the ServiceRequest with this identifier that this module loaded (other tests may hold a copy)."""
    bundle = requests.get(f"{base_url}/ServiceRequest", params={"identifier": identifier},
                          headers={"Cache-Control": "no-cache"}, timeout=60).json()
    loaded = runs["first"].keys() - runs["before"].keys()
    found = [entry["resource"] for entry in bundle.get("entry", []) if f"ServiceRequest/{entry['resource']['id']}" in loaded]
    assert len(found) == 1, f"{identifier}: {len(found)} found"
    return found[0]


def search_one(base_url, resource_type, **params):
    bundle = requests.get(f"{base_url}/{resource_type}", params=params, headers={"Cache-Control": "no-cache"}, timeout=60).json()
    entries = bundle.get("entry", [])
    assert len(entries) == 1, f"{resource_type}?{params}: {len(entries)} found"
    return entries[0]["resource"]


def rewrite_csv(source, target, change):
    """Copy a CSV export, passing each row (a dict) through `change`; keep only the rows it returns."""
    with open(source, encoding="utf-8-sig", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter=";"))
    kept = [row for row in (change(dict(row)) for row in rows) if row]
    with open(target, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0].keys()), delimiter=";")
        writer.writeheader()
        writer.writerows(kept)


@pytest.fixture(scope="module")
def runs(hapi, tmp_path_factory):
    """Load the examples twice, then the later exports; return the versions after each step."""
    patch = pytest.MonkeyPatch()
    patch.setenv("SONCO_FHIR_URL", hapi)
    patch.setenv("SONCO_PSEUDONYM_KEY", INCREMENTAL_KEY)
    patch.setenv("SONCO_DATA_DIR", str(tmp_path_factory.mktemp("incremental-data")))
    later = tmp_path_factory.mktemp("later")
    try:
        with removed_afterwards(hapi):
            yield run_steps(hapi, later)
    finally:
        patch.undo()
        shutil.rmtree(later, ignore_errors=True)


def run_steps(hapi, later) -> dict[str, dict[str, str]]:
    """Load the examples twice and the later exports; return the server's versions after each step."""
    steps = {"before": versions(hapi)}
    for kind in ("spice", "hygen"):
        ingest(kind, REPOSITORY / "examples" / kind)
    steps["first"] = versions(hapi)
    for kind in ("spice", "hygen"):
        ingest(kind, REPOSITORY / "examples" / kind)
    steps["again"] = versions(hapi)

    spice = REPOSITORY / "examples" / "spice"

    def amend_report(row):
        if row["numero_demande"] != "DEM-2024-01012":
            return None
        row.update(statut_compte_rendu="rectifie", date_compte_rendu="01/08/2024 10:00",
                   conclusion="Version rectifiée : pas d'altération somatique actionnable. TMB 1,4 mut/Mb ; statut MSS.",
                   date_modification="01/08/2024 10:01")
        return row

    def amend_tmb(row):
        if row["numero_demande"] != "DEM-2024-01012":
            return None
        if row["type_resultat"] == "tmb":
            row["tmb"] = "1,4"
        row["date_modification"] = "01/08/2024 10:01"
        return row

    def change_recommendation(row):
        if row["numero_demande"] != "DEM-2024-01012":
            return None
        row.update(recommandation="essai_clinique", numero_essai="NCT09990003",
                   resultats_lies="essai_clinique:R1", date_modification="05/08/2024 17:00")
        return row

    rewrite_csv(spice / "spice_resultats_20240702.csv", later / "spice_resultats_20240801.csv", amend_tmb)
    rewrite_csv(spice / "spice_comptes_rendus_20240702.csv", later / "spice_comptes_rendus_20240801.csv", amend_report)
    rewrite_csv(spice / "spice_rcp_aval_20240702.csv", later / "spice_rcp_aval_20240805.csv", change_recommendation)
    ingest("spice", later)

    document = json.loads((REPOSITORY / "examples" / "hygen" / "hygen_export_20240624.json").read_text(encoding="utf-8"))
    dossier = copy.deepcopy(next(d for d in document["dossiers"] if d["numero_demande"] == "HYG-24-0590"))
    dossier["date_mise_a_jour"] = "2024-07-10T09:00:00+02:00"
    dossier["compte_rendu"].update(statut="rectifie", date_compte_rendu="2024-07-09T16:00:00+02:00")
    dossier["rcp_aval"] = {"date_rcp_aval": "2024-07-10", "recommandations": [
        {"type": "therapie_ciblee", "medicament": "alpelisib", "resultats_lies": ["R1"]}]}
    document["dossiers"] = [dossier]
    hygen_dir = later / "hygen"
    hygen_dir.mkdir()
    (hygen_dir / "hygen_export_20240710.json").write_text(json.dumps(document, ensure_ascii=False), encoding="utf-8")
    ingest("hygen", hygen_dir)
    steps["later"] = versions(hapi)
    return steps


def test_same_exports_change_no_version(runs):
    assert runs["again"] == runs["first"]


def test_later_exports_add_no_report_or_plan(runs):
    for resource_type in ("DiagnosticReport", "CarePlan", "Observation", "ServiceRequest", "Patient"):
        before = {key for key in runs["first"] if key.startswith(resource_type + "/")}
        after = {key for key in runs["later"] if key.startswith(resource_type + "/")}
        if resource_type == "CarePlan":
            assert len(after - before) == 1  # the first RCP d'aval of HYG-24-0590
        else:
            assert after == before, resource_type


def test_amended_report_is_new_version(runs, hapi):
    request = loaded_request(hapi, runs, "https://sonco.example/fhir/NamingSystem/spice-request|DEM-2024-01012")
    report = search_one(hapi, "DiagnosticReport", **{"based-on": f"ServiceRequest/{request['id']}"})
    key = f"DiagnosticReport/{report['id']}"
    assert runs["first"][key] == "1"
    assert runs["later"][key] == "2"
    assert report["status"] == "amended"
    assert report["conclusion"].startswith("Version rectifiée")


def test_amended_finding_is_new_version(runs, hapi):
    request = loaded_request(hapi, runs, "https://sonco.example/fhir/NamingSystem/spice-request|DEM-2024-01012")
    tmb = search_one(hapi, "Observation", **{"based-on": f"ServiceRequest/{request['id']}", "code": "http://loinc.org|94076-7"})
    assert tmb["valueQuantity"]["value"] == 1.4
    assert runs["later"][f"Observation/{tmb['id']}"] == "2"
    msi = search_one(hapi, "Observation", **{"based-on": f"ServiceRequest/{request['id']}", "code": "http://loinc.org|81695-9"})
    assert runs["later"][f"Observation/{msi['id']}"] == "1"  # unchanged row, unchanged resource


def test_changed_recommendation_is_new_version(runs, hapi):
    request = loaded_request(hapi, runs, "https://sonco.example/fhir/NamingSystem/spice-request|DEM-2024-01012")
    subject = request["subject"]["reference"]
    plan = search_one(hapi, "CarePlan", subject=subject)
    assert runs["later"][f"CarePlan/{plan['id']}"] == "2"
    detail = plan["activity"][0]["detail"]
    assert detail["code"]["coding"][0]["code"] == "clinical-trial"
    assert detail["description"] == "NCT09990003"
    assert len(plan["activity"]) == 1


def test_hygen_amended_report_and_new_plan(runs, hapi):
    request = loaded_request(hapi, runs, "https://sonco.example/fhir/NamingSystem/hygen-request|HYG-24-0590")
    report = search_one(hapi, "DiagnosticReport", **{"based-on": f"ServiceRequest/{request['id']}"})
    assert report["status"] == "amended"
    assert runs["later"][f"DiagnosticReport/{report['id']}"] == "2"
    plan = search_one(hapi, "CarePlan", subject=request["subject"]["reference"])
    assert plan["activity"][0]["detail"]["productCodeableConcept"] == {"text": "alpelisib"}
