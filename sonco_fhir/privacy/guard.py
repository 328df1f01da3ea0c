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
    """Yield (path, text) for every string of a resource, in document order."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _strings(value, f"{path}.{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _strings(value, f"{path}[{index}]")
    elif isinstance(node, str):
        yield path, node


def _all_text(resources: list[dict]) -> str:
    """Join every string of the resources, each on its own line."""
    texts: list[str] = []
    pending: list = list(resources)
    while pending:
        node = pending.pop()
        if isinstance(node, str):
            texts.append(node)
        elif isinstance(node, dict):
            pending.extend(node.values())
        elif isinstance(node, list):
            pending.extend(node)
    return "\n".join(texts)


def _any_of(values: list[str], before: str, after: str) -> re.Pattern | None:
    """Compile one pattern that matches any of `values` between the `before` and `after` lookarounds, None without values."""
    if not values:
        return None
    return re.compile(before + "(?:" + "|".join(re.escape(value) for value in values) + ")" + after)


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
    identifier_pattern = _any_of(identifiers, r"(?<![\w.])", r"(?![\w.])")
    name_pattern = _any_of(names, r"(?<!\w)", r"(?!\w)")

    def leak_in(text: str) -> str | None:
        if identifier_pattern and identifier_pattern.search(text):
            return "problem.leak_identifier"
        if name_pattern and name_pattern.search(text.lower()):
            return "problem.leak_name"
        if any(form in text for form in birth_forms):
            return "problem.leak_birth_date"
        return None

    # One search over all the text first. A line break satisfies the patterns' lookarounds, so a value
    # found in one string is also found in the joined text, and most records stop here.
    if leak_in(_all_text(resources)) is None:
        return []
    problems = []
    for resource in resources:
        where = resource.get("resourceType", "?")
        for path, text in _strings(resource, where):
            leak = leak_in(text)
            if leak is None or path.endswith(".id") or ".reference" in path or path.endswith(".fullUrl"):
                continue
            problems.append(Problem(origin, path, t(leak), t(f"{leak}.fix")))
    return problems
