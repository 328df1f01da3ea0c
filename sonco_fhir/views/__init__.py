"""SQL-on-FHIR v2 ViewDefinitions: validate a view and flatten FHIR resources into rows."""

from .runner import run_view
from .validation import ViewDefinitionError, column_names, validate_view

__all__ = ["ViewDefinitionError", "column_names", "run_view", "validate_view"]
