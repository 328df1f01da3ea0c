"""HL7 v2 benchmark: parse + map + serialize throughput against python-hl7's bare parse, memory, MLLP -> HAPI.

Run with `make bench-hl7v2` or `.venv/bin/python bench/hl7v2/bench.py`.
See docs/benchmarks.md ("HL7 v2") for what each figure means.
"""

import argparse
import dataclasses
import json
import os
import platform
import resource
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import hl7

HERE = Path(__file__).resolve().parent
REPOSITORY = HERE.parents[1]
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPOSITORY))

import corpus  # noqa: E402

from sonco_fhir.config import load_settings  # noqa: E402
from sonco_fhir.connectors.hl7v2 import message_records  # noqa: E402
from sonco_fhir.loading.bundle import to_json, transaction_bundle  # noqa: E402
from sonco_fhir.pipeline import build_engine  # noqa: E402

START_BLOCK, END_BLOCK = b"\x0b", b"\x1c\x0d"


def isolated_environment(folder: Path) -> None:
    """Point the settings at a fresh data folder and key, so the benchmark touches no real store or crosswalk."""
    os.environ["SONCO_DATA_DIR"] = str(folder)
    os.environ["SONCO_PSEUDONYM_KEY"] = "sonco-benchmark-" + secrets.token_hex(32)


def usable_samples(engine) -> tuple[list[tuple[str, str]], list[str]]:
    """Split the samples into those that map without a problem (the corpus) and the names of the others."""
    usable, skipped = [], []
    for name, message in corpus.read_samples(corpus.sample_files()):
        try:
            records = message_records("bench", 1, message, 1)
        except ValueError:
            skipped.append(name)
            continue
        if all(not engine.map_record(record).problems for record in records):
            usable.append((name, message))
        else:
            skipped.append(name)
    return usable, skipped


def map_and_serialize(engine, message: str) -> int:
    """Parse, map and serialize one message as `sonco-fhir map` does; return the size of the JSON bundles."""
    size = 0
    for record in message_records("bench", 1, message, 1):
        mapped = engine.map_record(record)
        size += len(to_json(transaction_bundle(mapped.resources)))
    return size


def measure_throughput(samples, count: int, engine, stored_engine) -> dict:
    """Time python-hl7's parse and the full path on the same generated messages, interleaved per message.

    The full path runs twice per message: with `engine`, whose identity crosswalk is
    read-only as in `sonco-fhir map` (new links stay in memory), and with `stored_engine`,
    which commits each new patient's links to SQLite as `ingest` and the listener's loader
    do. The per-sample figures show which message kinds pull the ratio down.
    """
    bare_seconds = full_seconds = stored_seconds = 0.0
    corpus_bytes = 0
    per_sample = {name: {"messages": 0, "bare_seconds": 0.0, "full_seconds": 0.0} for name, _ in samples}
    for number, message in enumerate(corpus.generate(samples, count)):
        corpus_bytes += len(message)
        started = time.perf_counter()
        hl7.parse(message)
        bare = time.perf_counter() - started
        started = time.perf_counter()
        map_and_serialize(engine, message)
        full = time.perf_counter() - started
        started = time.perf_counter()
        map_and_serialize(stored_engine, message)
        stored_seconds += time.perf_counter() - started
        bare_seconds += bare
        full_seconds += full
        sample = per_sample[samples[number % len(samples)][0]]
        sample["messages"] += 1
        sample["bare_seconds"] += bare
        sample["full_seconds"] += full
    return {
        "messages": count,
        "corpus_bytes": corpus_bytes,
        "bare_parse_per_second": count / bare_seconds,
        "full_per_second": count / full_seconds,
        "ratio": bare_seconds / full_seconds,
        "stored_crosswalk_per_second": count / stored_seconds,
        "stored_crosswalk_ratio": bare_seconds / stored_seconds,
        "ratio_per_sample": {name: round(figures["bare_seconds"] / figures["full_seconds"], 3)
                             for name, figures in per_sample.items() if figures["full_seconds"]},
    }


def measure_steps(samples, count: int, engine, stored_engine) -> dict:
    """Time each step of the full path separately on `count` generated messages, in seconds.

    `map_record` uses the read-only crosswalk, as `sonco-fhir map` does, and
    `map_record_stored` the crosswalk that commits each new patient to SQLite.
    `full_path` is parse and flatten, map_record and serialize.
    """
    steps = dict.fromkeys(("hl7_parse", "message_records", "map_record", "map_record_stored", "serialize"), 0.0)
    for message in corpus.generate(samples, count):
        started = time.perf_counter()
        hl7.parse(message)
        parsed = time.perf_counter()
        records = message_records("bench", 1, message, 1)
        steps["hl7_parse"] += parsed - started
        steps["message_records"] += time.perf_counter() - parsed
        for record in records:
            started = time.perf_counter()
            mapped = engine.map_record(record)
            mapped_at = time.perf_counter()
            to_json(transaction_bundle(mapped.resources))
            serialized = time.perf_counter()
            stored_engine.map_record(record)
            steps["map_record"] += mapped_at - started
            steps["serialize"] += serialized - mapped_at
            steps["map_record_stored"] += time.perf_counter() - serialized
    steps["full_path"] = steps["message_records"] + steps["map_record"] + steps["serialize"]
    return {"messages": count, **{name: round(seconds, 3) for name, seconds in steps.items()}}


def memory_child(count: int) -> None:
    """Stream `count` messages through the full path and print the peak resident size, in KiB (child process)."""
    with tempfile.TemporaryDirectory() as folder:
        isolated_environment(Path(folder))
        engine = build_engine(load_settings(), read_only=False)
        samples, _ = usable_samples(engine)
        for message in corpus.generate(samples, count):
            map_and_serialize(engine, message)
        engine.crosswalk.close()
        print(json.dumps({"messages": count, "max_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))


def measure_memory(sizes: list[int]) -> list[dict]:
    results = []
    for count in sizes:
        completed = subprocess.run([sys.executable, __file__, "--memory-child", str(count)],
                                   capture_output=True, text=True, check=True)
        results.append(json.loads(completed.stdout.strip().splitlines()[-1]))
    return results


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def read_ack(client: socket.socket) -> bytes:
    data = b""
    while not data.endswith(END_BLOCK):
        chunk = client.recv(65536)
        if not chunk:
            raise ConnectionError("listener closed the connection before the ACK")
        data += chunk
    return data


def measure_end_to_end(samples, count: int, timeout: float) -> dict:
    """Start HAPI and `listen mllp --load` on free loopback ports, send `count` messages, wait until all are loaded."""
    from sonco_fhir.connectors.mllp import ack_requested
    from sonco_fhir.connectors.store import MessageStore, read_header, store_path
    from sonco_fhir.server.manage import start_server, stop_server

    folder = Path(tempfile.mkdtemp(prefix="sonco-bench-"))
    isolated_environment(folder / "data")
    port = free_port()
    settings = dataclasses.replace(load_settings(), data_dir=folder / "hapi", server_port=port,
                                   fhir_url=f"http://127.0.0.1:{port}/fhir")
    start_server(settings)
    os.environ["SONCO_FHIR_URL"] = settings.fhir_url
    listener_port = free_port()
    log_file = open(folder / "listen.log", "w")
    process = subprocess.Popen(
        [sys.executable, "-m", "sonco_fhir.cli.main", "listen", "mllp", "--port", str(listener_port), "--load",
         "--retry-max", "2"], stdout=log_file, stderr=subprocess.STDOUT, cwd=REPOSITORY)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                client = socket.create_connection(("127.0.0.1", listener_port), timeout=30)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        started = time.perf_counter()
        codes: dict[str, int] = {}
        with client:
            for message in corpus.generate(samples, count):
                client.sendall(START_BLOCK + message.encode("utf-8") + END_BLOCK)
                if not ack_requested(read_header(message), "AA"):
                    # Enhanced mode with MSH-15 NE or ER: the listener sends no ACK for a stored message.
                    codes["none requested"] = codes.get("none requested", 0) + 1
                    continue
                ack = read_ack(client).decode("utf-8", "replace")
                code = ack.split("\rMSA|", 1)[1][:2] if "\rMSA|" in ack else "??"
                codes[code] = codes.get(code, 0) + 1
        acknowledged = time.perf_counter() - started
        with MessageStore(store_path(folder / "data")) as store:
            deadline = time.monotonic() + timeout
            while store.count("pending") and time.monotonic() < deadline:
                time.sleep(0.2)
            loaded = time.perf_counter() - started
            statuses = {status: store.count(status) for status in ("pending", "done", "error")}
    finally:
        process.terminate()
        process.wait(timeout=120)
        log_file.close()
        stop_server(settings)
        shutil.rmtree(folder, ignore_errors=True)
    return {
        "messages": count,
        "ack_codes": codes,
        "acknowledged_per_second": count / acknowledged,
        "loaded_per_second": statuses["done"] / loaded,
        "statuses": statuses,
    }


def machine() -> dict:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "load_average_1min": os.getloadavg()[0],
        "hl7_version": getattr(hl7, "__version__", "?"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=10_000, help="messages of the throughput corpus (0: skip)")
    parser.add_argument("--memory-sizes", default="1000,10000", help="corpus sizes of the memory runs, comma-separated")
    parser.add_argument("--e2e-messages", type=int, default=1000, help="messages sent over MLLP to HAPI (0: skip)")
    parser.add_argument("--e2e-timeout", type=float, default=1800, help="seconds to wait for HAPI to load them")
    parser.add_argument("--steps", type=int, default=0, help="messages of a run that times each step apart (0: skip)")
    parser.add_argument("--output", type=Path, help="also write the JSON report to this file")
    parser.add_argument("--memory-child", type=int, help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.memory_child is not None:
        memory_child(arguments.memory_child)
        return

    report: dict = {"machine": machine()}
    with tempfile.TemporaryDirectory() as folder:
        isolated_environment(Path(folder))
        settings = load_settings()
        engine = build_engine(settings, read_only=True)
        stored_engine = build_engine(settings, read_only=False)
        samples, skipped = usable_samples(engine)
        report["corpus"] = {"samples": [name for name, _ in samples], "skipped_samples": skipped}
        print(f"corpus: {len(samples)} samples, {len(skipped)} skipped: {', '.join(skipped)}", file=sys.stderr)
        if arguments.messages:
            report["throughput"] = measure_throughput(samples, arguments.messages, engine, stored_engine)
            print(json.dumps(report["throughput"]), file=sys.stderr)
        if arguments.steps:
            report["steps"] = measure_steps(samples, arguments.steps, engine, stored_engine)
            print(json.dumps(report["steps"]), file=sys.stderr)
        engine.crosswalk.close()
        stored_engine.crosswalk.close()
    sizes = [int(size) for size in arguments.memory_sizes.split(",") if size]
    report["memory"] = measure_memory(sizes)
    print(json.dumps(report["memory"]), file=sys.stderr)
    if arguments.e2e_messages:
        report["end_to_end"] = measure_end_to_end(samples, arguments.e2e_messages, arguments.e2e_timeout)
    report["machine"]["load_average_1min_end"] = os.getloadavg()[0]
    text = json.dumps(report, indent=2)
    print(text)
    if arguments.output is not None:
        arguments.output.parent.mkdir(parents=True, exist_ok=True)
        arguments.output.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
