"""Benchmark of the indicators engine on a synthetic cohort loaded into a real HAPI FHIR server.

Steps: generate the cohort (generate.py), start a HAPI server on a free
loopback port with its own data folder (or use --url), load the cohort in
transaction Bundles, then measure in the same run:

- extraction: the engine's searches (sonco_fhir.indicators.run.fetch_resources)
  against a bare paging loop over the same searches. The loop sends the same
  parameters and page size, follows next links and parses the JSON, nothing
  else. The two alternate, so both see the same server state, and the rate
  ratio is bare time / engine time;
- computation after extraction: ViewDefinitions into DuckDB, then the SQL
  of the whole catalogue, suppression and MeasureReports;
- the whole catalogue: extraction plus computation.

Results are printed as JSON and written to --results.
"""

import argparse
import json
import os
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))

from generate import generate  # noqa: E402

from sonco_fhir.indicators.html import render_html  # noqa: E402
from sonco_fhir.indicators.run import SEARCHES, compute_run, fetch_resources  # noqa: E402
from sonco_fhir.loading.hapi import FhirServer  # noqa: E402

PAGE_SIZE = "1000"
MAX_PAGES = 10_000  # bound of the bare loop, far above the pages of a 10,000-patient cohort


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def load(base_url: str, resources: list[dict], batch: int) -> float:
    """PUT the resources in transaction Bundles of `batch` entries; return the seconds taken."""
    started = time.perf_counter()
    session = requests.Session()
    for first in range(0, len(resources), batch):
        entries = [{"resource": resource, "request": {"method": "PUT", "url": f"{resource['resourceType']}/{resource['id']}"}}
                   for resource in resources[first:first + batch]]
        response = session.post(base_url, json={"resourceType": "Bundle", "type": "transaction", "entry": entries},
                                headers={"Content-Type": "application/fhir+json"}, timeout=600)
        if response.status_code != 200:
            raise SystemExit(f"loading entries {first}-{first + len(entries)} failed: HTTP {response.status_code}: {response.text[:1000]}")
    return time.perf_counter() - started


def bare_extraction(base_url: str) -> tuple[float, int]:
    """Run the reference: the same searches in a plain loop that only follows next links. Return (seconds, resources)."""
    started = time.perf_counter()
    session = requests.Session()
    count = 0
    for resource_type, params in SEARCHES.items():
        url, query = f"{base_url}/{resource_type}", {**params, "_count": PAGE_SIZE}
        for _ in range(MAX_PAGES):
            response = session.get(url, params=query, headers={"Cache-Control": "no-cache", "Accept": "application/fhir+json"},
                                   timeout=600)
            if response.status_code != 200:
                raise SystemExit(f"GET {resource_type} page failed: HTTP {response.status_code}: {response.text[:1000]}")
            bundle = response.json()
            count += sum(1 for entry in bundle.get("entry", []) if entry.get("search", {}).get("mode", "match") == "match")
            url = next((link["url"] for link in bundle.get("link", []) if link["relation"] == "next"), None)
            query = None
            if url is None:
                break
    return time.perf_counter() - started, count


def engine_extraction(base_url: str) -> tuple[float, dict]:
    started = time.perf_counter()
    resources = fetch_resources(FhirServer(base_url))
    return time.perf_counter() - started, resources


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=10_000, help="patients in the synthetic cohort (default 10000)")
    parser.add_argument("--url", help="FHIR base URL of a running server on this machine; default: start one on a free loopback port")
    parser.add_argument("--batch", type=int, default=1000, help="entries per transaction Bundle when loading (default 1000)")
    parser.add_argument("--skip-load", action="store_true",
                        help="skip loading, because the server at --url already contains the cohort of --patients from an earlier load")
    parser.add_argument("--rounds", type=int, default=2, help="alternated extraction rounds, the best of each is kept (default 2)")
    parser.add_argument("--results", type=Path, default=Path("build/bench-indicators.json"), help="JSON file for the results")
    parser.add_argument("--html", type=Path, help="also write the HTML report of the cohort to this file")
    arguments = parser.parse_args()
    if arguments.skip_load and not arguments.url:
        parser.error("--skip-load needs --url: a server started by the benchmark holds no data")

    results: dict = {"patients": arguments.patients, "cpus": os.cpu_count(), "load_average_start": os.getloadavg()}
    started_server = None
    data_dir = None
    base_url = arguments.url
    if base_url is None:
        from sonco_fhir.config import load_settings
        from sonco_fhir.server.manage import start_server

        data_dir = Path(tempfile.mkdtemp(prefix="bench-indicators-"))
        os.environ.update({"SONCO_DATA_DIR": str(data_dir), "SONCO_SERVER_PORT": str(free_port())})
        os.environ.pop("SONCO_FHIR_URL", None)
        started_server = load_settings()
        started = time.perf_counter()
        start_server(started_server)
        results["server_start_seconds"] = round(time.perf_counter() - started, 1)
        base_url = started_server.fhir_url
    try:
        if not arguments.skip_load:
            resources = list(generate(arguments.patients))
            results["resources"] = len(resources)
            results["load_seconds"] = round(load(base_url, resources, arguments.batch), 1)
            del resources

        bare_extraction(base_url)  # warm-up: JIT, database caches
        bare_times, engine_times = [], []
        fetched: dict = {}
        for _ in range(arguments.rounds):
            seconds, bare_count = bare_extraction(base_url)
            bare_times.append(seconds)
            seconds, fetched = engine_extraction(base_url)
            engine_times.append(seconds)
        engine_count = sum(len(items) for items in fetched.values())
        if engine_count != bare_count:
            raise SystemExit(f"the engine fetched {engine_count} resources, the bare loop {bare_count}")
        results["extracted_resources"] = engine_count
        results["bare_extraction_seconds"] = round(min(bare_times), 2)
        results["engine_extraction_seconds"] = round(min(engine_times), 2)
        results["extraction_rate_ratio"] = round(min(bare_times) / min(engine_times), 3)

        run = compute_run(fetched, ("lab", "preindication", "month"), None, 10)
        results["flatten_seconds"] = round(run.timings["flatten"], 2)
        results["sql_seconds"] = round(run.timings["sql"], 2)
        results["computation_seconds"] = round(run.timings["compute"], 2)
        results["whole_catalogue_seconds"] = round(min(engine_times) + run.timings["compute"], 2)
        results["load_average_end"] = os.getloadavg()
        if arguments.html:
            arguments.html.write_text(render_html(run), encoding="utf-8")
    except BaseException:
        if data_dir is not None:
            print(f"benchmark failed; the server log stays in {data_dir}/server/hapi.log", file=sys.stderr)
            data_dir = None  # keep it for the post-mortem
        raise
    finally:
        if started_server is not None:
            from sonco_fhir.server.manage import stop_server

            stop_server(started_server)
            if data_dir is not None:
                shutil.rmtree(data_dir, ignore_errors=True)

    arguments.results.parent.mkdir(parents=True, exist_ok=True)
    arguments.results.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
