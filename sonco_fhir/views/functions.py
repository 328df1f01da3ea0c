"""FHIRPath functions that SQL-on-FHIR v2 requires and fhirpathpy 2.2 lacks or implements differently.

Each function receives the evaluation context, the input collection as
fhirpathpy nodes (so the FHIR type of a primitive is still known), then
its arguments. The table `VIEW_FUNCTIONS` is passed to fhirpathpy as its
user invocation table.
"""

import calendar
import re
from decimal import Decimal

from fhirpathpy.engine.nodes import FP_DateTime, FP_Time, ResourceNode
from fhirpathpy.engine.util import get_data

# A relative or absolute literal reference: [base/]Type/id[/_history/version].
REFERENCE_PATTERN = re.compile(r"(?:^|/)([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(?:/_history/[^/]+)?$")

DATE_PATTERN = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?$")
DATETIME_PATTERN = re.compile(
    r"^(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2})(?::(\d{2})(?::(\d{2})(?:\.(\d+))?)?)?)?)?)?"
    r"(Z|[+-]\d{2}:\d{2})?$"
)
TIME_PATTERN = re.compile(r"^(\d{2})(?::(\d{2})(?::(\d{2})(?:\.(\d+))?)?)?$")

# FHIRPath boundaries of a dateTime without a time zone span every offset in use.
EARLIEST_OFFSET = "+14:00"
LATEST_OFFSET = "-12:00"


def get_resource_key(ctx, inputs):
    """Return `Type/id` for each resource in the input, the key that getReferenceKey() matches."""
    keys = []
    for item in inputs:
        data = get_data(item)
        if isinstance(data, dict) and data.get("resourceType") and data.get("id"):
            keys.append(f"{data['resourceType']}/{data['id']}")
    return keys


def get_reference_key(ctx, inputs, type_info=None):
    """Return `Type/id` for each literal Reference in the input.

    With a type argument, references to other resource types give no key.
    Contained (`#id`) and logical references give no key either.
    """
    wanted_type = getattr(type_info, "name", None)
    keys = []
    for item in inputs:
        data = get_data(item)
        reference = data.get("reference") if isinstance(data, dict) else None
        if not isinstance(reference, str):
            continue
        match = REFERENCE_PATTERN.search(reference)
        if match is None:
            continue
        resource_type, resource_id = match.groups()
        if wanted_type is not None and resource_type != wanted_type:
            continue
        keys.append(f"{resource_type}/{resource_id}")
    return keys


def join(ctx, inputs, separator=""):
    """Join string items with `separator`.

    Unlike fhirpathpy 2.2, which returns an empty collection, an empty input
    gives the empty string, as the SQL-on-FHIR v2 test suite expects.
    """
    values = []
    for item in inputs:
        data = get_data(item)
        if not isinstance(data, str):
            raise TypeError(f"join() needs strings, got {data!r}")
        values.append(data)
    return "".join(values) if separator is None else separator.join(values)


def low_boundary(ctx, inputs, precision=None):
    return [_boundary(item, low=True, precision=precision) for item in inputs if _is_boundable(item)]


def high_boundary(ctx, inputs, precision=None):
    return [_boundary(item, low=False, precision=precision) for item in inputs if _is_boundable(item)]


VIEW_FUNCTIONS = {
    "getResourceKey": {"fn": get_resource_key},
    "getReferenceKey": {"fn": get_reference_key, "arity": {0: [], 1: ["TypeSpecifier"]}},
    "join": {"fn": join, "arity": {0: [], 1: ["String"]}},
    "lowBoundary": {"fn": low_boundary, "arity": {0: [], 1: ["Integer"]}},
    "highBoundary": {"fn": high_boundary, "arity": {0: [], 1: ["Integer"]}},
}


def _is_boundable(item) -> bool:
    data = get_data(item)
    return isinstance(data, (int, Decimal, str, FP_DateTime, FP_Time)) and not isinstance(data, bool)


def _boundary(item, low: bool, precision):
    fhir_type = item.path if isinstance(item, ResourceNode) else None
    data = get_data(item)
    if isinstance(data, (int, Decimal)):
        return _decimal_boundary(Decimal(data), low, precision)
    text = str(data)
    if isinstance(data, FP_Time) or fhir_type == "time" or TIME_PATTERN.match(text):
        return _time_boundary(text, low)
    if fhir_type == "date" or (fhir_type not in ("dateTime", "instant") and DATE_PATTERN.match(text)):
        return _date_boundary(text, low)
    return _datetime_boundary(text, low)


def _decimal_boundary(value: Decimal, low: bool, precision):
    """Return the lowest or highest decimal that rounds to `value` at its own precision."""
    places = max(-value.as_tuple().exponent, 0)
    half_unit = Decimal(5).scaleb(-(places + 1))
    result = value - half_unit if low else value + half_unit
    if precision is not None:
        result = result.quantize(Decimal(1).scaleb(-int(precision)))
    return result


def _date_boundary(text: str, low: bool):
    match = DATE_PATTERN.match(text)
    if match is None:
        return None
    year, month, day = match.groups()
    month = month or ("01" if low else "12")
    if day is None:
        day = "01" if low else f"{calendar.monthrange(int(year), int(month))[1]:02d}"
    return f"{year}-{month}-{day}"


def _datetime_boundary(text: str, low: bool):
    match = DATETIME_PATTERN.match(text)
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    date = _date_boundary("-".join(part for part in (year, month, day) if part), low)
    clock = _clock_boundary(hour, minute, second, fraction, low)
    offset = offset or (EARLIEST_OFFSET if low else LATEST_OFFSET)
    return f"{date}T{clock}{offset}"


def _time_boundary(text: str, low: bool):
    match = TIME_PATTERN.match(text)
    if match is None:
        return None
    return _clock_boundary(*match.groups(), low)


def _clock_boundary(hour, minute, second, fraction, low: bool) -> str:
    filler_minute = "00" if low else "59"
    hour = hour or ("00" if low else "23")
    minute = minute or filler_minute
    second = second or filler_minute
    fraction = (fraction or "").ljust(3, "0" if low else "9")
    return f"{hour}:{minute}:{second}.{fraction}"
