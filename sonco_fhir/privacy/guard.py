"""Last check before loading: no raw identifier, name or birth date in the output.

Mappings are meant to drop these already; the guard catches a mapping
mistake before the data leaves the trusted side. Its messages name the
resource and element, never the value found.
"""

import re
from dataclasses import dataclass, field

from ..errors import Problem
from ..i18n import t

MIN_IDENTIFIER_LENGTH = 4
MIN_NAME_LENGTH = 3


@dataclass
class Identity:
    """The identifying values of one record, as read from the source."""

    identifiers: list[str] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    birth_dates: list[str] = field(default_factory=list)


def _strings(node, path: str):
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _strings(value, f"{path}.{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _strings(value, f"{path}[{index}]")
    elif isinstance(node, str):
        yield path, node


def _birth_date_forms(value: str) -> list[str]:
    digits = re.sub(r"\D", "", value)[:8]
    if len(digits) < 8:
        return []
    return [digits, f"{digits[:4]}-{digits[4:6]}-{digits[6:8]}"]


def find_leaks(resources: list[dict], identity: Identity, origin: str) -> list[Problem]:
    identifiers = [value for value in identity.identifiers if len(value) >= MIN_IDENTIFIER_LENGTH]
    names = [value.lower() for value in identity.names if len(value) >= MIN_NAME_LENGTH]
    birth_forms = [form for value in identity.birth_dates for form in _birth_date_forms(value)]
    # Whole tokens only: an IPP "000003" must not match the RefSeq accession "NC_000003.12".
    identifier_patterns = [re.compile(rf"(?<![\w.]){re.escape(value)}(?![\w.])") for value in identifiers]
    name_patterns = [re.compile(rf"(?<!\w){re.escape(name)}(?!\w)") for name in names]

    problems = []
    for resource in resources:
        where = resource.get("resourceType", "?")
        for path, text in _strings(resource, where):
            if path.endswith(".id") or ".reference" in path or path.endswith(".fullUrl"):
                continue
            lowered = text.lower()
            if any(pattern.search(text) for pattern in identifier_patterns):
                problems.append(Problem(origin, path, t("problem.leak_identifier"), t("problem.leak_identifier.fix")))
            elif any(pattern.search(lowered) for pattern in name_patterns):
                problems.append(Problem(origin, path, t("problem.leak_name"), t("problem.leak_name.fix")))
            elif any(form in text for form in birth_forms):
                problems.append(Problem(origin, path, t("problem.leak_birth_date"), t("problem.leak_birth_date.fix")))
    return problems
