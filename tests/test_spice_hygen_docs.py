"""The field tables of docs/connectors-spice-hygen{,.fr}.md against the export contracts and the mappings.

Each `### \\`pattern\\`` section of the two pages contains one table row per field
of that file in connectors/spice.yaml or connectors/hygen.yaml, in the same
order. A row gives the field path, type, whether it is required, its meaning
(description, allowed values, example, INS-NIR check) and the FHIR element;
the English page copies the contract's `fhir` text, the French page
translates it. The mappings may read only fields that the contract declares.
"""

import re

import pytest
import yaml

from conftest import REPOSITORY

KINDS = ("spice", "hygen")
DOCUMENTS = {"en": "connectors-spice-hygen.md", "fr": "connectors-spice-hygen.fr.md"}
WORDS = {
    "en": {"text": "text", "number": "number", "date": "date", "datetime": "date-time", "list": "list",
           "object": "object", "yes": "yes", "no": "no", "when": "when", "is": "is", "values": "Values:",
           "example": "Example:", "ins-nir": "Control key checked."},
    "fr": {"text": "texte", "number": "nombre", "date": "date", "datetime": "date-heure", "list": "liste",
           "object": "objet", "yes": "oui", "no": "non", "when": "si", "is": "vaut", "values": "Valeurs :",
           "example": "Exemple :", "ins-nir": "Clé de contrôle vérifiée."},
}


def contract(kind: str) -> dict:
    return yaml.safe_load((REPOSITORY / "connectors" / f"{kind}.yaml").read_text(encoding="utf-8"))


def contract_fields(fields: list[dict], prefix: str = ""):
    """Yield (path, field) for every field, nested ones as `parent.child` or `list[].child`."""
    for spec in fields:
        path = f"{prefix}{spec['name']}"
        yield path, spec
        nested = "[]." if spec.get("type") == "list" else "."
        yield from contract_fields(spec.get("fields", []), f"{path}{nested}")


def cell(text: str) -> str:
    """Escape a value for a Markdown table cell."""
    return str(text).replace("|", "\\|")


def expected_row(spec: dict, path: str, lang: str) -> list[str]:
    """The table cells (without the FHIR element) that the page must give for one contract field."""
    words = WORDS[lang]
    field_type = spec.get("type", "text")
    type_text = words[field_type]
    if field_type == "list" and spec.get("separator"):
        type_text += f" (`{cell(spec['separator'])}`)"
    if spec.get("required"):
        required = words["yes"]
    elif spec.get("required_when"):
        conditions = [f"`{name}` {words['is']} " + ", ".join(f"`{value}`" for value in values)
                      for name, values in spec["required_when"].items()]
        required = f"{words['when']} " + "; ".join(conditions)
    else:
        required = words["no"]
    meaning = cell(spec[f"description_{lang}"])
    if spec.get("values"):
        meaning += f" {words['values']} " + ", ".join(f"`{value}`" for value in spec["values"]) + "."
    if spec.get("example"):
        meaning += f" {words['example']} `{cell(spec['example'])}`."
    if spec.get("check") == "ins-nir":
        meaning += f" {words['ins-nir']}"
    return [f"`{path}`", type_text, required, meaning]


def documented_rows(text: str, pattern: str) -> list[list[str]]:
    """The table rows of the section titled with the file pattern, split into cells."""
    section = re.search(rf"^### `{re.escape(pattern)}`\n(.*?)(?=^#)", text + "\n#", re.S | re.M)
    assert section, f"no section for {pattern}"
    rows = []
    for line in section.group(1).splitlines():
        if not line.startswith("| `"):
            continue
        cells = [part.strip() for part in re.split(r"(?<!\\)\|", line)[1:-1]]
        rows.append(cells)
    return rows


@pytest.mark.parametrize("lang", DOCUMENTS)
@pytest.mark.parametrize("kind", KINDS)
def test_docs_tables_match_contract(kind, lang):
    text = (REPOSITORY / "docs" / DOCUMENTS[lang]).read_text(encoding="utf-8")
    for file_spec in contract(kind)["files"]:
        rows = documented_rows(text, file_spec["pattern"])
        fields = list(contract_fields(file_spec["fields"]))
        assert [row[0] for row in rows] == [f"`{path}`" for path, _ in fields], file_spec["pattern"]
        for row, (path, spec) in zip(rows, fields):
            assert row[:4] == expected_row(spec, path, lang), f"{DOCUMENTS[lang]}: {file_spec['pattern']} {path}"
            assert row[4], f"{DOCUMENTS[lang]}: {path} has no FHIR element"
            if lang == "en":
                assert row[4] == cell(spec["fhir"]), f"{DOCUMENTS[lang]}: FHIR element of {path}"


def read_fields(template_text: str, variable: str) -> set[str]:
    """The member names read as `variable.name` in a mapping file."""
    return set(re.findall(rf"\b{variable}\.([a-z_0-9]+)", template_text))


@pytest.mark.parametrize("kind", KINDS)
def test_mappings_read_only_declared_fields(kind):
    spec = contract(kind)
    declared = {path.split(".")[-1].removesuffix("[]") for file_spec in spec["files"] for path, _ in contract_fields(file_spec["fields"])}
    read = set()
    for path in (REPOSITORY / "mappings" / kind).glob("*.yaml"):
        text = path.read_text(encoding="utf-8")
        for variable in ("row", "item", "finding", "recommendation", "sample"):
            read |= read_fields(text, variable)
    # `finding.numero_resultat` and the like are declared; `sample` in a $map is a sample number in SPICE.
    assert read - declared == set()
    assert read >= {"numero_demande", "date_modification" if kind == "spice" else "date_mise_a_jour"}
