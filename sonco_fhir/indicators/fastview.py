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

`compile_view` raises Unsupported for anything else, and `run_fast` then
falls back to run_view. tests/test_indicator_sql.py checks that both give
the same rows on every view.
"""

import re
from collections.abc import Callable, Iterable
from ..views import run_view
from ..views.runner import _cross_join  # the reference runner's row product, so both combine columns alike
from ..views.functions import REFERENCE_PATTERN

Path = Callable[[list], list]
_LITERAL_EQUALS = re.compile(r"^(?P<path>.+?)\s*=\s*'(?P<text>[^']*)'$")


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
    """Navigate a chain of member names at once, the most frequent step of the views."""
    def navigate(items: list) -> list:
        for name in names:
            found = []
            for item in items:
                if type(item) is dict:
                    value = item.get(name)
                    if type(value) is list:
                        found.extend(value)
                    elif value is not None:
                        found.append(value)
            items = found
        return items
    return navigate


def _reference_key(wanted_type: str | None) -> Path:
    def keys(items: list) -> list:
        found = []
        for item in items:
            reference = item.get("reference") if isinstance(item, dict) else None
            match = REFERENCE_PATTERN.search(reference) if isinstance(reference, str) else None
            if match and (wanted_type is None or match.group(1) == wanted_type):
                found.append(f"{match.group(1)}/{match.group(2)}")
        return found
    return keys


def _resource_key(items: list) -> list:
    return [f"{item['resourceType']}/{item['id']}" for item in items
            if isinstance(item, dict) and item.get("resourceType") and item.get("id")]


def _condition(text: str) -> Callable[[object], bool]:
    """Compile a `where` condition: terms joined by `and`, each `PATH = 'text'` or `PATH.exists()`."""
    tests = []
    for term in _split(text, " and "):
        if match := _LITERAL_EQUALS.match(term):
            path, expected = compile_path(match.group("path")), match.group("text")
            tests.append(lambda item, path=path, expected=expected: path([item]) == [expected])
        elif term.endswith(".exists()"):
            path = compile_path(term[: -len(".exists()")])
            tests.append(lambda item, path=path: bool(path([item])))
        else:
            raise Unsupported(f"condition {term!r}")
    return lambda item: all(test(item) for test in tests)


def compile_path(expression: str) -> Path:
    """Compile a FHIRPath expression of the supported subset into a function from a collection to a collection."""
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
            steps.append(_members(members))
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
            steps.append(lambda items, condition=condition: [item for item in items if condition(item)])
        elif _LITERAL_EQUALS.match(segment) and index == len(segments) - 1 and len(segments) == 1:
            condition = _condition(segment)
            steps.append(lambda items, condition=condition: [condition(item) for item in items[:1]])
        else:
            raise Unsupported(f"path segment {segment!r} of {expression!r}")
        index += 1
    if members:
        steps.append(_members(members))

    def evaluate(items: list) -> list:
        for step in steps:
            items = step(items)
        return items
    return evaluate


def _compile_selection(selection: dict) -> tuple[str | None, Path | None, list[tuple[str, Path]]]:
    unsupported = set(selection) - {"column", "forEach", "forEachOrNull"}
    if unsupported:
        raise Unsupported(f"select keys {sorted(unsupported)}")
    columns = []
    for column in selection.get("column", []):
        if column.get("collection"):
            raise Unsupported(f"collection column {column['name']}")
        columns.append((column["name"], compile_path(column["path"])))
    for mode in ("forEach", "forEachOrNull"):
        if mode in selection:
            return mode, compile_path(selection[mode]), columns
    return None, None, columns


def compile_view(view: dict) -> Callable[[dict], list[dict]]:
    """Compile a ViewDefinition into a function from one resource to its rows. Raises Unsupported."""
    if set(view) - {"resourceType", "name", "title", "status", "resource", "where", "select", "description"}:
        raise Unsupported(f"view keys {sorted(set(view))}")
    conditions = [compile_path(clause["path"]) for clause in view.get("where", [])]
    selections = [_compile_selection(selection) for selection in view["select"]]

    def single(path: Path, focus: object, name: str) -> object:
        values = path([focus])
        if len(values) > 1:
            raise Unsupported(f"column {name} gives {len(values)} values")
        return values[0] if values else None

    def rows_of(resource: dict) -> list[dict]:
        for condition in conditions:
            if condition([resource]) != [True]:
                return []
        partials = []
        for mode, iterate, columns in selections:
            if mode is None:
                partials.append([{name: single(path, resource, name) for name, path in columns}])
                continue
            items = iterate([resource])
            if not items:
                if mode == "forEach":
                    return []
                partials.append([{name: None for name, _ in columns}])
                continue
            partials.append([{name: single(path, item, name) for name, path in columns} for item in items])
        return _cross_join(partials)

    return rows_of


def run_fast(view: dict, resources: Iterable[dict]) -> list[dict]:
    """Return the rows of `view` over `resources`: compiled when the view is in the subset, else through run_view."""
    resources = [resource for resource in resources if isinstance(resource, dict) and resource.get("resourceType") == view["resource"]]
    try:
        rows_of = compile_view(view)
        return [row for resource in resources for row in rows_of(resource)]
    except Unsupported:
        return run_view(view, resources)
