"""A fast runner for the ViewDefinitions of `views/`, for the small FHIRPath subset they use.

sonco_fhir.views.run_view interprets FHIRPath with fhirpathpy, which took
16.7 s for 21,223 resources on a busy 2-core machine. This module compiles
the paths once into plain Python functions over the parsed JSON and runs
them on every resource. It supports:

- member access (`subject.reference`), flattening arrays as FHIRPath does;
- `name.ofType(Type)` on a choice element, read as the JSON key `nameType`;
- `where(...)` whose condition is terms joined by `and`, each term
  `PATH = 'text'` or `PATH.exists()`;
- `first()`, `exists()`, `getResourceKey()`, `getReferenceKey(Type)`;
- `select` lists of `column`, `forEach` and `forEachOrNull` (no nesting,
  no `unionAll`, no `repeat`, no constants, no `collection` columns).

`compile_view` raises Unsupported for anything else, and `run_fast` and
`run_fast_columns` then fall back to run_view. tests/test_indicator_sql.py
checks that both give the same rows on every view.

The columns the views use most (`getResourceKey()`, `X.getReferenceKey(T)`,
member names only) get their own functions. `run_fast_columns` returns the
values column by column, without a dict per row. Together these cut the CPU
time of the 10,000-patient benchmark cohort by about a quarter (see
"Indicators" in docs/benchmarks.md).
"""

import re
from collections.abc import Callable, Iterable
from functools import lru_cache
from itertools import chain, product
from ..views import column_names, run_view
from ..views.functions import REFERENCE_PATTERN

Path = Callable[[list], list]
_LITERAL_EQUALS = re.compile(r"^(?P<path>.+?)\s*=\s*'(?P<text>[^']*)'$")
_REFERENCE_COLUMN = re.compile(r"^(?:(?P<members>[a-z][A-Za-z0-9]*(?:\.[a-z][A-Za-z0-9]*)*)\.)?getReferenceKey\((?P<type>[A-Za-z]*)\)$")


class Unsupported(Exception):
    """A ViewDefinition feature or FHIRPath expression outside the subset of this module."""


def _split(text: str, separator: str) -> list[str]:
    """Split on `separator` outside parentheses and quotes."""
    parts, depth, quoted, start, index = [], 0, False, 0, 0
    while index < len(text):
        character = text[index]
        if character == "'":
            quoted = not quoted
        elif not quoted and character == "(":
            depth += 1
        elif not quoted and character == ")":
            depth -= 1
        elif not quoted and depth == 0 and text.startswith(separator, index):
            parts.append(text[start:index])
            index += len(separator)
            start = index
            continue
        index += 1
    parts.append(text[start:])
    return [part.strip() for part in parts]


def _members(names: list[str]) -> Path:
    """Navigate a chain of member names, the most frequent step of the views, flattening arrays as FHIRPath does."""
    return _chain([_member(name) for name in names])


def _member(name: str) -> Path:
    def navigate(items: list) -> list:
        found = []
        for item in items:
            if type(item) is dict:
                value = item.get(name)
                if value is not None:
                    if type(value) is list:
                        found.extend(value)
                    else:
                        found.append(value)
        return found
    return navigate


@lru_cache(maxsize=200_000)
def _reference_parts(reference: str) -> tuple[str, str] | None:
    """Return (type, "Type/id") of a literal reference, or None when it has no such form.

    The cache pays because many resources reference the same Patient or ServiceRequest.
    """
    match = REFERENCE_PATTERN.search(reference)
    return (match.group(1), f"{match.group(1)}/{match.group(2)}") if match else None


def _reference_key(expected_type: str | None) -> Path:
    def keys(items: list) -> list:
        found = []
        for item in items:
            reference = item.get("reference") if type(item) is dict else None
            if type(reference) is str:
                parts = _reference_parts(reference)
                if parts and (expected_type is None or parts[0] == expected_type):
                    found.append(parts[1])
        return found
    return keys


def _resource_key(items: list) -> list:
    return [f"{item['resourceType']}/{item['id']}" for item in items
            if isinstance(item, dict) and item.get("resourceType") and item.get("id")]


def _equals(path_text: str, expected: str) -> Callable[[object], bool]:
    """Compile `PATH = 'text'`: true when PATH gives exactly the one value `text`."""
    if re.fullmatch(r"[a-z][A-Za-z0-9]*", path_text):
        name, as_list = path_text, [expected]

        def member_equals(item: object) -> bool:
            if type(item) is not dict:
                return False
            value = item.get(name)
            return value == as_list if type(value) is list else value == expected
        return member_equals
    path = compile_path(path_text)
    return lambda item: path([item]) == [expected]


def _condition(text: str) -> Callable[[object], bool]:
    """Compile a `where` condition: terms joined by `and`, each `PATH = 'text'` or `PATH.exists()`."""
    tests = []
    for term in _split(text, " and "):
        if match := _LITERAL_EQUALS.match(term):
            tests.append(_equals(match.group("path"), match.group("text")))
        elif term.endswith(".exists()"):
            path = compile_path(term[: -len(".exists()")])
            tests.append(lambda item, path=path: bool(path([item])))
        else:
            raise Unsupported(f"condition {term!r}")
    if len(tests) == 1:
        return tests[0]
    if len(tests) == 2:
        first, second = tests
        return lambda item: first(item) and second(item)
    return lambda item: all(test(item) for test in tests)


def compile_path(expression: str) -> Path:
    """Compile a FHIRPath expression of the supported subset into a function from a collection to a collection."""
    leading, steps = _compile_steps(expression)
    return _chain([_members(leading), *steps] if leading else steps)


def _compile_steps(expression: str) -> tuple[list[str], list[Path]]:
    """Return the member names the expression starts with, and the compiled steps that follow them."""
    leading: list[str] = []
    steps: list[Path] = []
    members: list[str] = []  # consecutive member names, compiled into one step
    segments = _split(expression, ".")
    index = 0
    while index < len(segments):
        segment = segments[index]
        following = segments[index + 1] if index + 1 < len(segments) else ""
        if re.fullmatch(r"[a-z][A-Za-z0-9]*", segment):
            if following.startswith("ofType(") and following.endswith(")"):
                type_name = following[len("ofType("):-1]
                members.append(segment + type_name[0].upper() + type_name[1:])
                index += 2
            else:
                members.append(segment)
                index += 1
            continue
        if members:
            if leading or steps:
                steps.append(_members(members))
            else:
                leading = members
            members = []
        if segment == "first()":
            steps.append(lambda items: items[:1])
        elif segment == "exists()":
            steps.append(lambda items: [bool(items)])
        elif segment == "getResourceKey()":
            steps.append(_resource_key)
        elif match := re.fullmatch(r"getReferenceKey\(([A-Za-z]*)\)", segment):
            steps.append(_reference_key(match.group(1) or None))
        elif segment.startswith("where(") and segment.endswith(")"):
            condition = _condition(segment[len("where("):-1])
            if following == "exists()":  # where(...).exists(), the usual filter of the views: stop at the first match
                steps.append(lambda items, condition=condition: [any(condition(item) for item in items)])
                index += 2
                continue
            steps.append(lambda items, condition=condition: [item for item in items if condition(item)])
        elif _LITERAL_EQUALS.match(segment) and index == len(segments) - 1 and len(segments) == 1:
            condition = _condition(segment)
            steps.append(lambda items, condition=condition: [condition(item) for item in items[:1]])
        else:
            raise Unsupported(f"path segment {segment!r} of {expression!r}")
        index += 1
    if members:
        if leading or steps:
            steps.append(_members(members))
        else:
            leading = members
    return leading, steps


def _chain(steps: list[Path]) -> Path:
    """Compose the steps of a path, without a loop for the usual one, two or three steps."""
    if not steps:
        return lambda items: items
    if len(steps) == 1:
        return steps[0]
    if len(steps) == 2:
        first, second = steps
        return lambda items: second(first(items))
    if len(steps) == 3:
        first, second, third = steps
        return lambda items: third(second(first(items)))

    def evaluate(items: list) -> list:
        for step in steps:
            items = step(items)
        return items
    return evaluate


def _walk(leading: list[str]) -> Callable[[object], object]:
    """Read the member names one after the other from one focus, while each value is a single object.

    Returns the value reached, None when a member is missing, or the first
    array met, for which the caller runs the whole path on collections.
    """
    if not leading:
        return lambda focus: focus
    if len(leading) == 1:
        name = leading[0]
        return lambda focus: focus.get(name) if type(focus) is dict else None

    def walk(focus: object) -> object:
        value = focus
        for member in leading:
            if type(value) is dict:
                value = value.get(member)
            elif type(value) is list:
                return value
            else:  # a member of a text or number: nothing
                return None
        return value
    return walk


def _column(name: str, expression: str) -> Callable[[object], object]:
    """Compile a column path into a function from one focus to the column's value, None when the path gives nothing.

    The leading member names are read one after the other while each value
    is a single object (`subject.reference`, the usual case), so no
    collection is built. When an array is met, the whole path runs on collections.
    `getResourceKey()`, `getReferenceKey()` after member names, and paths
    of member names only, the usual columns, get their own functions.
    Raises Unsupported when the path gives more than one value.
    """
    leading, steps = _compile_steps(expression)
    path = _chain([_members(leading), *steps] if leading else steps)
    rest = _chain(steps)
    walk = _walk(leading)

    def single(focus: object) -> object:
        values = path([focus])
        if len(values) == 1:
            return values[0]
        if values:
            raise Unsupported(f"column {name} gives {len(values)} values")
        return None

    if expression == "getResourceKey()":
        def resource_key(focus: object) -> object:
            if type(focus) is dict:
                resource_type, resource_id = focus.get("resourceType"), focus.get("id")
                if resource_type and resource_id:
                    return f"{resource_type}/{resource_id}"
            return None
        return resource_key

    if match := _REFERENCE_COLUMN.match(expression):
        expected_type = match.group("type") or None

        def reference_key(focus: object) -> object:
            value = walk(focus)
            if type(value) is list:
                return single(focus)
            if type(value) is dict:
                reference = value.get("reference")
                if type(reference) is str:
                    parts = _reference_parts(reference)
                    if parts and (expected_type is None or parts[0] == expected_type):
                        return parts[1]
            return None
        return reference_key

    if not steps:
        def member_value(focus: object) -> object:
            value = walk(focus)
            return single(focus) if type(value) is list else value
        return member_value

    def value_of(focus: object) -> object:
        value = walk(focus)
        if type(value) is list:
            return single(focus)
        values = rest([] if value is None else [value])
        if len(values) == 1:
            return values[0]
        if values:
            raise Unsupported(f"column {name} gives {len(values)} values")
        return None
    return value_of


def _compile_selection(selection: dict) -> tuple[str | None, Path | None, list[str], list[Callable[[object], object]]]:
    unsupported = set(selection) - {"column", "forEach", "forEachOrNull"}
    if unsupported:
        raise Unsupported(f"select keys {sorted(unsupported)}")
    names, getters = [], []
    for column in selection.get("column", []):
        if column.get("collection"):
            raise Unsupported(f"collection column {column['name']}")
        names.append(column["name"])
        getters.append(_column(column["name"], column["path"]))
    for mode in ("forEach", "forEachOrNull"):
        if mode in selection:
            return mode, compile_path(selection[mode]), names, getters
    return None, None, names, getters


def compile_view(view: dict) -> Callable[[dict], list[dict]]:
    """Compile a ViewDefinition into a function from one resource to its rows. Raises Unsupported."""
    names, values_of = _compile_values(view)
    return lambda resource: [dict(zip(names, values)) for values in values_of(resource)]


def _compile_values(view: dict) -> tuple[list[str], Callable[[dict], list[tuple]]]:
    """Compile a ViewDefinition into its column names and a function from one resource to its rows as tuples. Raises Unsupported."""
    if set(view) - {"resourceType", "name", "title", "status", "resource", "where", "select", "description"}:
        raise Unsupported(f"view keys {sorted(set(view))}")
    conditions = [compile_path(clause["path"]) for clause in view.get("where", [])]
    selections = [_compile_selection(selection) for selection in view["select"]]
    names = [name for _, _, selection_names, _ in selections for name in selection_names]
    if len(set(names)) != len(names):
        raise Unsupported(f"column names repeated in {names}")

    def values_of(resource: dict) -> list[tuple]:
        for condition in conditions:
            if condition([resource]) != [True]:
                return []
        partials = []
        for mode, iterate, selection_names, getters in selections:
            if mode is None:
                partials.append([tuple([getter(resource) for getter in getters])])
                continue
            items = iterate([resource])
            if not items:
                if mode == "forEach":
                    return []
                partials.append([(None,) * len(getters)])
                continue
            partials.append([tuple([getter(item) for getter in getters]) for item in items])
        if len(partials) == 1:
            return partials[0]
        if len(partials) == 2 and len(partials[0]) == 1:
            first = partials[0][0]
            return [first + values for values in partials[1]]
        return [tuple(chain.from_iterable(combination)) for combination in product(*partials)]

    return names, values_of


def run_fast(view: dict, resources: Iterable[dict]) -> list[dict]:
    """Return the rows of `view` over `resources`: compiled when the view is in the subset, else through run_view."""
    names, columns = run_fast_columns(view, resources)
    return [dict(zip(names, values)) for values in zip(*columns)]


def run_fast_columns(view: dict, resources: Iterable[dict]) -> tuple[list[str], list[list]]:
    """Return the rows of `view` over `resources` column by column: (column names, one list of values per column).

    The same values as run_fast, without building a dict per row, for
    loading into a column store.
    """
    resources = [resource for resource in resources if isinstance(resource, dict) and resource.get("resourceType") == view["resource"]]
    try:
        names, values_of = _compile_values(view)
        rows = [values for resource in resources for values in values_of(resource)]
    except Unsupported:
        names = column_names(view)
        rows = [tuple([row.get(name) for name in names]) for row in run_view(view, resources)]
    return names, [list(column) for column in zip(*rows)] if rows else [[] for _ in names]
