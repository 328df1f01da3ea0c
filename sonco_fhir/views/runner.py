"""Run SQL-on-FHIR v2 ViewDefinitions over FHIR R4 resources held in memory.

FHIRPath is evaluated by fhirpathpy with the R4 model. The view semantics
(nested `select`, `forEach`, `forEachOrNull`, `repeat`, `unionAll`,
`where`, `constant`, `%rowIndex`) are implemented here.
"""

from collections.abc import Iterable, Iterator
from decimal import Decimal
from functools import lru_cache
from itertools import product
from typing import Any

from fhirpathpy.engine import do_eval
from fhirpathpy.engine.invocations.constants import constants as fhirpath_constants
from fhirpathpy.engine.nodes import FP_Type, ResourceNode
from fhirpathpy.engine.util import arraify, get_data
from fhirpathpy.models import models
from fhirpathpy.parser import parse

from .functions import VIEW_FUNCTIONS
from .validation import ViewDefinitionError, column_names, selection_column_names, validate_view

__all__ = ["ViewDefinitionError", "column_names", "run_view"]

R4_MODEL = models["r4"]
UCUM_SYSTEM = "http://unitsofmeasure.org"

# value[x] types of ViewDefinition.constant that FHIRPath compares as numbers.
INTEGER_CONSTANT_TYPES = {"valueInteger", "valuePositiveInt", "valueUnsignedInt", "valueInteger64"}


def run_view(view: dict, resources: Iterable[dict]) -> list[dict]:
    """Return the rows of `view` over `resources`, one dict per row with keys in column order.

    Raises ViewDefinitionError when the view is invalid, a `where` path
    gives a non-boolean, or a column without `collection: true` gives more
    than one value.
    """
    validate_view(view)
    names = column_names(view)
    variables = _constant_values(view.get("constant", []))
    top_level = {"select": view["select"]}

    rows: list[dict] = []
    for resource in resources:
        if not isinstance(resource, dict) or resource.get("resourceType") != view["resource"]:
            continue
        resource_variables = {**variables, "resource": resource, "rootResource": resource, "rowIndex": 0}
        if not _passes_where(view.get("where", []), resource, resource_variables):
            continue
        for partial_row in _select_rows(top_level, resource, resource_variables, ""):
            rows.append({name: partial_row.get(name) for name in names})
    return rows


@lru_cache(maxsize=1024)
def _parsed(expression: str) -> dict:
    return parse(expression)


def _evaluate(expression: str, focus: Any, variables: dict, location: str) -> list:
    """Evaluate `expression` on `focus` and return fhirpathpy nodes.

    `focus` None stands for an empty collection, used for the null row of
    `forEachOrNull`.
    """
    data_root = [] if focus is None else [focus]
    fhirpath_constants.reset()
    context = {
        "dataRoot": data_root,
        "vars": {"context": focus, "ucum": UCUM_SYSTEM, **variables},
        "model": R4_MODEL,
        "userInvocationTable": VIEW_FUNCTIONS,
        "$this": data_root,
    }
    try:
        result = do_eval(context, data_root, _parsed(expression)["children"][0])
    except Exception as error:  # fhirpathpy raises bare Exception, ValueError and TypeError
        resource = variables.get("resource") or {}
        subject = f"{resource.get('resourceType')}/{resource.get('id')}"
        raise ViewDefinitionError(location, f"evaluating {expression!r} on {subject} failed: {error}") from error
    return [item for item in arraify(result) if not _is_extension_only(item)]


def _is_extension_only(item: Any) -> bool:
    """Tell whether `item` is a primitive that has extensions but no value (the `_name` JSON element)."""
    return isinstance(item, ResourceNode) and isinstance(item.data, dict) and list(item.data) == ["extension"]


def _passes_where(where: list[dict], resource: dict, variables: dict) -> bool:
    for index, clause in enumerate(where):
        location = f"where[{index}].path"
        result = [get_data(item) for item in _evaluate(clause["path"], resource, variables, location)]
        if not result:
            return False
        if len(result) > 1 or not isinstance(result[0], bool):
            raise ViewDefinitionError(
                location, f"{clause['path']!r} must give one boolean, got {_to_column_value(result)!r}"
            )
        if not result[0]:
            return False
    return True


def _select_rows(selection: dict, focus: Any, variables: dict, location: str) -> list[dict]:
    """Return the partial rows (column name to value) that `selection` gives for `focus`."""
    iterating = True
    if "forEach" in selection:
        items = _evaluate(selection["forEach"], focus, variables, _child(location, "forEach"))
    elif "forEachOrNull" in selection:
        items = _evaluate(selection["forEachOrNull"], focus, variables, _child(location, "forEachOrNull")) or [None]
    elif "repeat" in selection:
        items = list(_repeat(selection["repeat"], focus, variables, _child(location, "repeat")))
    else:
        items = [focus]
        iterating = False

    rows: list[dict] = []
    for index, item in enumerate(items):
        item_variables = {**variables, "rowIndex": index} if iterating else variables
        rows.extend(_item_rows(selection, item, item_variables, location))
    return rows


def _item_rows(selection: dict, item: Any, variables: dict, location: str) -> list[dict]:
    """Combine a selection's columns, nested selects and unionAll for one focus item (a cross join)."""
    own_columns = {}
    for index, column in enumerate(selection.get("column", [])):
        own_columns[column["name"]] = _column_value(column, item, variables, _child(location, f"column[{index}]"))
    parts: list[list[dict]] = [[own_columns]]

    if item is None:
        # The null row of an empty forEachOrNull: nested selections and unionAll branches add one row of nulls.
        nested_names = [name for name in selection_column_names(selection) if name not in own_columns]
        parts.append([dict.fromkeys(nested_names)])
        return _cross_join(parts)

    for index, nested in enumerate(selection.get("select", [])):
        parts.append(_select_rows(nested, item, variables, _child(location, f"select[{index}]")))

    branches = selection.get("unionAll", [])
    if branches:
        union_rows: list[dict] = []
        for index, branch in enumerate(branches):
            union_rows.extend(_select_rows(branch, item, variables, _child(location, f"unionAll[{index}]")))
        parts.append(union_rows)

    return _cross_join(parts)


def _cross_join(parts: list[list[dict]]) -> list[dict]:
    rows = []
    for combination in product(*parts):
        row: dict = {}
        for part in combination:
            row.update(part)
        rows.append(row)
    return rows


def _child(location: str, element: str) -> str:
    return f"{location}.{element}" if location else element


def _repeat(paths: list[str], focus: Any, variables: dict, location: str) -> Iterator[Any]:
    """Yield the nodes reached from `focus` by any of `paths`, recursively, depth first in document order."""
    for index, path in enumerate(paths):
        for child in _evaluate(path, focus, variables, f"{location}[{index}]"):
            yield child
            yield from _repeat(paths, child, variables, location)


def _column_value(column: dict, item: Any, variables: dict, location: str) -> Any:
    values = [_to_column_value(node) for node in _evaluate(column["path"], item, variables, f"{location}.path")]
    if column.get("collection") is True:
        return values
    if len(values) > 1:
        raise ViewDefinitionError(
            f"{location}.path",
            f"{column['path']!r} gives {len(values)} values for column {column['name']!r}; "
            "set \"collection\": true or narrow the path (for example with first())",
        )
    return values[0] if values else None


def _to_column_value(value: Any) -> Any:
    """Convert a fhirpathpy result to a JSON-like value.

    Decimals stay `decimal.Decimal` so that no digit is lost. Dates, times
    and quantities become their FHIRPath string form.
    """
    if isinstance(value, list):
        return [_to_column_value(item) for item in value]
    data = get_data(value)
    if isinstance(data, FP_Type):
        return str(data)
    if isinstance(data, dict):
        return {key: _to_column_value(item) for key, item in data.items()}
    if isinstance(data, list):
        return [_to_column_value(item) for item in data]
    return data


def _constant_values(constants: list[dict]) -> dict:
    """Map each constant name to its typed value, for use as `%name` in FHIRPath."""
    values = {}
    for constant in constants:
        key = next(key for key in constant if key.startswith("value"))
        value = constant[key]
        if key == "valueDecimal":
            value = Decimal(str(value))
        elif key in INTEGER_CONSTANT_TYPES:
            value = int(value)
        values[constant["name"]] = value
    return values
