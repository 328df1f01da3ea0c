"""The unit of work every connector yields and the mapping engine consumes."""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

from ..errors import Problem


@dataclass
class SourceRecord:
    """One input record: an HL7 v2 message, a FHIR resource, an export row.

    `data` is what mapping templates see. `key` identifies the record
    within its source, so a re-sent record maps to the same resource ids.
    """

    kind: str
    origin: str
    position: str
    key: str
    data: dict
    selector: dict = field(default_factory=dict)

    @property
    def where(self) -> str:
        return f"{self.origin}: {self.position}"


@dataclass
class ReadResult:
    records: list[SourceRecord] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


def expand_paths(paths: Iterable[Path], suffixes: tuple[str, ...]) -> Iterator[Path]:
    """Yield the given files, and the files with one of `suffixes` in the given folders."""
    for path in paths:
        if path.is_dir():
            for child in sorted(path.rglob("*")):
                if child.is_file() and child.suffix.lower() in suffixes:
                    yield child
        else:
            yield path
