"""Functions that mapping templates may call, documented in docs/mapping-format.md."""

import re
from decimal import Decimal, InvalidOperation

from ..privacy.pseudonym import Pseudonymiser
from .conceptmap import ConceptMaps
from .dates import export_date, export_datetime, v2_date, v2_datetime, year


def group_by_sub_id(segments: list[dict]) -> list[dict]:
    """Group OBX segments by the part of OBX-4 before the first dot, in order of appearance.

    Clinical-genomics results send one variant per sub-id (`2a`), with its
    components as sibling OBX; `1a.a` belongs to the group `1a`.
    """
    groups: dict[str, dict] = {}
    for segment in segments:
        sub_id = segment.get("4", "").split(".")[0]
        group = groups.setdefault(sub_id, {"sub_id": sub_id, "by_code": {}, "segments": []})
        group["segments"].append(segment)
        group["by_code"].setdefault(segment.get("3.1", ""), segment)
    return list(groups.values())


def number(value):
    """A number from text, as int when whole; raises on text that is not a number."""
    if value is None or value == "":
        return None
    text = str(value).strip().replace(",", ".")
    try:
        parsed = Decimal(text)
    except InvalidOperation:
        raise ValueError(f"'{value}' is not a number") from None
    return int(parsed) if parsed == parsed.to_integral_value() and "." not in text else float(text)


def first(*values):
    """The first value that is not null, empty text or empty; else the last one.

    JSON-e's `||` gives a boolean, so templates default with `first(x, "default")`.
    """
    for value in values:
        if value not in (None, "", [], {}):
            return value
    return values[-1] if values else None


def template_functions(pseudonymiser: Pseudonymiser, conceptmaps: ConceptMaps) -> dict:
    def ref(resource_type, *key):
        return f"{resource_type}/{pseudonymiser.resource_id(resource_type, *[str(part) for part in key])}"

    def code(table, value):
        return conceptmaps.translate(table, value)

    def code_only(table, value):
        coding = conceptmaps.translate(table, value)
        return coding.get("code") if coding else None

    def matches(value, pattern):
        return bool(re.search(pattern, value or ""))

    return {
        "ref": ref,
        "code": code,
        "code_only": code_only,
        "v2_datetime": v2_datetime,
        "v2_date": v2_date,
        "date": export_date,
        "datetime": export_datetime,
        "year": year,
        "number": number,
        "matches": matches,
        "first": first,
        "group_by_sub_id": group_by_sub_id,
    }
