"""Structural checks of a SQL-on-FHIR v2 ViewDefinition, run before any resource is read.

Every error names the place in the view as a JSON-path-like location,
for example `select[1].unionAll[0].column[2].path`.
"""

import re
from typing import Any

from antlr4 import CommonTokenStream, InputStream, Token
from antlr4.error.ErrorListener import ErrorListener
from fhirpathpy.parser import parse
from fhirpathpy.parser.generated.FHIRPathLexer import FHIRPathLexer
from fhirpathpy.parser.generated.FHIRPathParser import FHIRPathParser

from ..errors import ConfigurationError

# Column names must be usable unquoted in SQL (ViewDefinition.select.column.name).
COLUMN_NAME_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
CONSTANT_NAME_PATTERN = COLUMN_NAME_PATTERN
ITERATION_KEYS = ("forEach", "forEachOrNull", "repeat")


class ViewDefinitionError(ConfigurationError):
    """An invalid ViewDefinition, or an expression that failed on a resource."""

    def __init__(self, location: str, message: str):
        super().__init__(f"{location}: {message}" if location else message)
        self.location = location
        self.detail = message


def validate_view(view: Any) -> None:
    """Raise ViewDefinitionError on the first structural problem found in `view`."""
    if not isinstance(view, dict):
        raise ViewDefinitionError("", f"a ViewDefinition must be a JSON object, got {type(view).__name__}")

    resource = view.get("resource")
    if not isinstance(resource, str) or not resource:
        raise ViewDefinitionError("resource", "missing or empty resource type (for example \"Patient\")")

    select = view.get("select")
    if not isinstance(select, list) or not select:
        raise ViewDefinitionError("select", "missing or empty list of selections")

    _validate_constants(view.get("constant", []))
    _validate_where(view.get("where", []))
    for index, selection in enumerate(select):
        _validate_selection(selection, f"select[{index}]")

    names = column_names(view)
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ViewDefinitionError("select", f"duplicate column names: {', '.join(duplicates)}")


def column_names(view: dict) -> list[str]:
    """Return the column names of `view` in output order.

    The order is: a selection's own columns, then its nested `select`
    entries, then the columns of its first `unionAll` branch.
    """
    names: list[str] = []
    for selection in view.get("select", []):
        names.extend(selection_column_names(selection))
    return names


def selection_column_names(selection: dict) -> list[str]:
    names = [column["name"] for column in selection.get("column", [])]
    for nested in selection.get("select", []):
        names.extend(selection_column_names(nested))
    branches = selection.get("unionAll", [])
    if branches:
        names.extend(selection_column_names(branches[0]))
    return names


def check_expression(expression: Any, location: str) -> None:
    """Raise ViewDefinitionError unless `expression` is a FHIRPath string that parses."""
    if not isinstance(expression, str) or not expression.strip():
        raise ViewDefinitionError(location, f"a FHIRPath expression must be a non-empty string, got {expression!r}")
    try:
        _check_syntax(expression)
        parse(expression)
    except Exception as error:  # the ANTLR lexer and parser raise several unrelated exception types
        raise ViewDefinitionError(location, f"invalid FHIRPath expression {expression!r}: {error}") from error


class _RaisingErrorListener(ErrorListener):
    def syntaxError(self, recognizer, offending_symbol, line, column, message, error):
        raise SyntaxError(f"column {column + 1}: {message}")


def _check_syntax(expression: str) -> None:
    """Raise SyntaxError on any FHIRPath syntax error.

    fhirpathpy.parser.parse (2.2) recovers from parser errors, so that
    `name.where(` parses without complaint. This check runs the same
    generated ANTLR grammar with a listener that raises, and requires the
    whole text to be consumed.
    """
    listener = _RaisingErrorListener()
    lexer = FHIRPathLexer(InputStream(expression))
    lexer.removeErrorListeners()
    lexer.addErrorListener(listener)
    tokens = CommonTokenStream(lexer)
    parser = FHIRPathParser(tokens)
    parser.removeErrorListeners()
    parser.addErrorListener(listener)
    parser.expression()
    if tokens.LA(1) != Token.EOF:
        raise SyntaxError(f"unexpected text after column {tokens.LT(1).start + 1}")


def _validate_constants(constants: Any) -> None:
    if not isinstance(constants, list):
        raise ViewDefinitionError("constant", "must be a list")
    names: set[str] = set()
    for index, constant in enumerate(constants):
        location = f"constant[{index}]"
        if not isinstance(constant, dict):
            raise ViewDefinitionError(location, "must be a JSON object")
        name = constant.get("name")
        if not isinstance(name, str) or not CONSTANT_NAME_PATTERN.match(name):
            raise ViewDefinitionError(f"{location}.name", f"invalid constant name {name!r}")
        if name in names:
            raise ViewDefinitionError(f"{location}.name", f"constant {name!r} is defined twice")
        value_keys = [key for key in constant if key.startswith("value")]
        if len(value_keys) != 1:
            raise ViewDefinitionError(
                location, f"constant {name!r} needs exactly one value[x] element, found {len(value_keys)}"
            )
        names.add(name)


def _validate_where(where: Any) -> None:
    if not isinstance(where, list):
        raise ViewDefinitionError("where", "must be a list")
    for index, clause in enumerate(where):
        if not isinstance(clause, dict):
            raise ViewDefinitionError(f"where[{index}]", "must be a JSON object with a path")
        check_expression(clause.get("path"), f"where[{index}].path")


def _validate_selection(selection: Any, location: str) -> None:
    if not isinstance(selection, dict):
        raise ViewDefinitionError(location, "a selection must be a JSON object")

    iterations = [key for key in ITERATION_KEYS if key in selection]
    if len(iterations) > 1:
        raise ViewDefinitionError(location, f"use only one of {', '.join(iterations)}")
    for key in ("forEach", "forEachOrNull"):
        if key in selection:
            check_expression(selection[key], f"{location}.{key}")
    if "repeat" in selection:
        paths = selection["repeat"]
        if not isinstance(paths, list) or not paths:
            raise ViewDefinitionError(f"{location}.repeat", "must be a non-empty list of FHIRPath expressions")
        for index, path in enumerate(paths):
            check_expression(path, f"{location}.repeat[{index}]")

    columns = selection.get("column", [])
    if not isinstance(columns, list):
        raise ViewDefinitionError(f"{location}.column", "must be a list")
    for index, column in enumerate(columns):
        _validate_column(column, f"{location}.column[{index}]")

    nested = selection.get("select", [])
    if not isinstance(nested, list):
        raise ViewDefinitionError(f"{location}.select", "must be a list")
    for index, child in enumerate(nested):
        _validate_selection(child, f"{location}.select[{index}]")

    branches = selection.get("unionAll", [])
    if not isinstance(branches, list):
        raise ViewDefinitionError(f"{location}.unionAll", "must be a list")
    for index, branch in enumerate(branches):
        _validate_selection(branch, f"{location}.unionAll[{index}]")
    if branches:
        expected = selection_column_names(branches[0])
        for index, branch in enumerate(branches[1:], start=1):
            found = selection_column_names(branch)
            if found != expected:
                raise ViewDefinitionError(
                    f"{location}.unionAll[{index}]",
                    f"columns {found} differ from the first branch {expected}; "
                    "every branch needs the same column names in the same order",
                )

    if not columns and not nested and not branches:
        raise ViewDefinitionError(location, "a selection needs at least one of column, select or unionAll")


def _validate_column(column: Any, location: str) -> None:
    if not isinstance(column, dict):
        raise ViewDefinitionError(location, "a column must be a JSON object")
    name = column.get("name")
    if not isinstance(name, str) or not COLUMN_NAME_PATTERN.match(name):
        raise ViewDefinitionError(
            f"{location}.name", f"invalid column name {name!r}: use a letter then letters, digits or _"
        )
    check_expression(column.get("path"), f"{location}.path")
    if "collection" in column and not isinstance(column["collection"], bool):
        raise ViewDefinitionError(f"{location}.collection", "must be true or false")
    if "type" in column and not isinstance(column["type"], str):
        raise ViewDefinitionError(f"{location}.type", "must be a FHIR type name")
