"""Benchmark corpus: HL7 v2 messages generated, as a stream, from the real samples of the shared cases folder.

Message n is sample n modulo the sample count, with MSH-10 set to a
unique control id and every PID-3 and MRG-1 identifier value suffixed
with n, so that each generated message is a new message about a new
patient. Nothing is kept in memory beyond the samples themselves.
"""

from collections.abc import Iterator
from pathlib import Path

from sonco_fhir.connectors.hl7v2 import split_messages

CASES = Path(__file__).resolve().parents[3] / "shared" / "cases"
SUFFIXES = (".hl7", ".er7", ".txt")


def sample_files(cases: Path = CASES) -> list[Path]:
    return sorted(path for folder in cases.glob("hl7v2-*") for path in folder.iterdir()
                  if path.suffix in SUFFIXES and path.is_file())


def read_samples(files: list[Path]) -> list[tuple[str, str]]:
    """Return (file name, message text with CR separators) for every message of the files."""
    samples = []
    for path in files:
        raw = path.read_bytes()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = raw.decode("latin-1")
        if "MSH" not in text[:2000]:
            continue
        for index, (_, message) in enumerate(split_messages(text), start=1):
            samples.append((f"{path.parent.name}/{path.name}#{index}", message))
    return samples


def vary(message: str, number: int) -> str:
    """Give `message` the control id BENCH<number> and suffix its PID-3 and MRG-1 identifier values with -<number>."""
    separator = message[3]
    component, repetition = message[4], message[5]
    segments = message.split("\r")
    for position, segment in enumerate(segments):
        fields = segment.split(separator)
        if fields[0] == "MSH" and len(fields) > 9:
            fields[9] = f"BENCH{number:07d}"
        elif fields[0] in ("PID", "MRG"):
            index = 3 if fields[0] == "PID" else 1
            if len(fields) > index and fields[index]:
                fields[index] = repetition.join(
                    _suffix_identifier(value, component, number) for value in fields[index].split(repetition))
        segments[position] = separator.join(fields)
    return "\r".join(segments)


def _suffix_identifier(value: str, component: str, number: int) -> str:
    parts = value.split(component)
    if parts[0]:
        parts[0] = f"{parts[0]}-{number}"
    return component.join(parts)


def generate(samples: list[tuple[str, str]], count: int) -> Iterator[str]:
    """Yield `count` messages, cycling over the samples."""
    for number in range(count):
        yield vary(samples[number % len(samples)][1], number)
