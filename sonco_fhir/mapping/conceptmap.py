"""Code tables: FHIR ConceptMap files that translate local codes without Python."""

import json
from pathlib import Path

from ..errors import ConfigurationError


class ConceptMaps:
    def __init__(self, folder: Path):
        self._tables: dict[str, dict[str, dict]] = {}
        for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
            try:
                resource = json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as error:
                raise ConfigurationError(f"{path}: line {error.lineno}: invalid JSON: {error.msg}") from None
            if resource.get("resourceType") != "ConceptMap" or "id" not in resource:
                raise ConfigurationError(f"{path}: not a ConceptMap with an id")
            table: dict[str, dict] = {}
            for group in resource.get("group", []):
                for element in group.get("element", []):
                    targets = element.get("target") or []
                    if not targets:
                        continue
                    target = targets[0]
                    coding = {"system": group.get("target"), "code": target.get("code"), "display": target.get("display")}
                    table[element["code"]] = {key: value for key, value in coding.items() if value}
            self._tables[resource["id"]] = table

    def names(self) -> list[str]:
        return sorted(self._tables)

    def translate(self, table: str, code: str | None) -> dict | None:
        """Return the target Coding for `code`, or None when the table has no entry."""
        if table not in self._tables:
            raise ConfigurationError(f"unknown code table '{table}' (known: {', '.join(self.names())})")
        if code is None:
            return None
        return self._tables[table].get(str(code).strip())
