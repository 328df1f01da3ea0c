"""Exit codes and the error types every stage raises.

Exit codes are a public contract for scripts and schedulers: a retired
number is never reused.
"""

from dataclasses import dataclass, field
from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    RECORDS_REJECTED = 1  # the run finished, but some records were set aside
    USAGE = 2  # bad command line (typer/click uses 2 as well)
    CONFIGURATION = 3  # missing key, unreadable mapping file, bad settings
    SERVER_UNAVAILABLE = 4  # the FHIR server is unreachable, timed out or failed (HTTP 5xx)
    SERVER_BUILD_FAILED = 5  # the Maven build or the Java launch of HAPI failed
    INPUT_UNREADABLE = 6  # no input record could be read at all


@dataclass
class Problem:
    """One problem found in one input record.

    `location` names the place in the source (file:line, HL7 segment and
    field, CSV column); `message` never contains a patient value.
    """

    source: str
    location: str
    message: str
    fix: str = ""

    def render(self) -> str:
        text = f"{self.source}: {self.location}: {self.message}"
        if self.fix:
            text += f" ({self.fix})"
        return text


class SoncoError(Exception):
    """An error that ends the command with a specific exit code."""

    exit_code: ExitCode = ExitCode.CONFIGURATION

    def __init__(self, message: str, exit_code: ExitCode | None = None):
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class ConfigurationError(SoncoError):
    exit_code = ExitCode.CONFIGURATION


class ServerError(SoncoError):
    exit_code = ExitCode.SERVER_UNAVAILABLE


@dataclass
class RecordError(Exception):
    """A record that cannot be mapped; carries every problem found in it."""

    problems: list[Problem] = field(default_factory=list)

    def __str__(self) -> str:
        return "; ".join(p.render() for p in self.problems)
