"""Generate the human-readable pages of the SONCO profiles from their StructureDefinitions.

    python -m sonco_fhir.profiles.docs [--profiles-dir DIR] [--output-dir DIR] [--check]

Writes one English page (`<id>.md`) and one French page (`<id>.fr.md`) per StructureDefinition,
and an index of each language listing the profiles, code systems, value sets and naming systems.
French text comes from the `translation` extensions on title, description, short and human.
`--check` writes nothing and exits with 1 when a page is missing or out of date.
"""

import argparse
import json
import logging
import sys
from pathlib import Path

from ..config import REPOSITORY, load_settings
from . import EXAMPLES_DIR, PACKAGE_NAME, PACKAGE_VERSION, ConformanceError, localized, read_resources, translation

log = logging.getLogger(__name__)

LABELS = {
    "en": {
        "generated": "Generated from `{source}` by `python -m sonco_fhir.profiles.docs`: edit the StructureDefinition, not this page.",
        "generated_index": "Generated from the resources under `profiles/` by `python -m sonco_fhir.profiles.docs`: edit those files, not this page.",
        "other_language": "[Version française]({page})",
        "canonical": "Canonical URL", "base": "Based on", "version": "Version", "status": "Status",
        "constraints": "Constrained elements", "element": "Element", "cardinality": "Cardinality",
        "rule": "Rule", "meaning": "Meaning",
        "invariants": "Invariants", "key": "Key", "severity": "Severity", "expression": "FHIRPath expression",
        "example": "Example", "example_text": "A valid instance: [`{name}`]({link}).",
        "no_example": "No example instance.",
        "types": "type", "target": "reference to", "fixed": "fixed", "pattern": "pattern", "binding": "binding",
        "sliced": "sliced by {paths} ({rules})", "slice": "slice",
        "index_title": "SONCO FHIR profiles",
        "index_intro": "Conformance resources of the `{package}` package, version {version}, on FHIR R4 (4.0.1). "
                       "Build the package with `make profiles-package`.",
        "profiles": "Profiles", "profile": "Profile", "resource": "Resource", "title": "Title",
        "code_systems": "Code systems", "value_sets": "Value sets", "naming_systems": "Naming systems",
        "code": "Code", "display": "Display", "definition": "Definition", "url": "URL", "codes": "Codes",
        "content_not_present": "The codes are not listed (content `not-present`).",
        "includes": "Includes", "all_codes_of": "all codes of {system}",
    },
    "fr": {
        "generated": "Page générée depuis `{source}` par `python -m sonco_fhir.profiles.docs` : modifier la StructureDefinition, pas cette page.",
        "generated_index": "Page générée depuis les ressources de `profiles/` par `python -m sonco_fhir.profiles.docs` : modifier ces fichiers, pas cette page.",
        "other_language": "[English version]({page})",
        "canonical": "URL canonique", "base": "Profil de base", "version": "Version", "status": "Statut",
        "constraints": "Éléments contraints", "element": "Élément", "cardinality": "Cardinalité",
        "rule": "Règle", "meaning": "Signification",
        "invariants": "Invariants", "key": "Clé", "severity": "Sévérité", "expression": "Expression FHIRPath",
        "example": "Exemple", "example_text": "Une instance valide : [`{name}`]({link}).",
        "no_example": "Pas d'instance d'exemple.",
        "types": "type", "target": "référence vers", "fixed": "valeur fixe", "pattern": "motif", "binding": "liaison",
        "sliced": "découpé par {paths} ({rules})", "slice": "tranche",
        "index_title": "Profils FHIR SONCO",
        "index_intro": "Ressources de conformité du package `{package}`, version {version}, sur FHIR R4 (4.0.1). "
                       "Le package se construit avec `make profiles-package`.",
        "profiles": "Profils", "profile": "Profil", "resource": "Ressource", "title": "Titre",
        "code_systems": "Systèmes de codes", "value_sets": "Jeux de valeurs", "naming_systems": "Systèmes d'identifiants",
        "code": "Code", "display": "Libellé", "definition": "Définition", "url": "URL", "codes": "Codes",
        "content_not_present": "Les codes ne sont pas listés (contenu `not-present`).",
        "includes": "Contient", "all_codes_of": "tous les codes de {system}",
    },
}
LANGUAGES = ("en", "fr")


def page_name(resource_id: str, language: str) -> str:
    return f"{resource_id}.md" if language == "en" else f"{resource_id}.{language}.md"


def index_name(language: str) -> str:
    return "README.md" if language == "en" else f"README.{language}.md"


def _cell(text) -> str:
    """Text safe for one Markdown table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def _code(value) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return f"`{_cell(text)}`"


def _element_label(element: dict) -> str:
    # Element ids name slices as `path:slice`; that is how profile tables usually show them.
    return _code(element["id"])


def _cardinality(element: dict) -> str:
    """`min..max` when the profile sets both, else the one bound it sets (the other is the base's)."""
    if "min" in element and "max" in element:
        return f"{element['min']}..{element['max']}"
    if "min" in element:
        return f"min {element['min']}"
    if "max" in element:
        return f"max {element['max']}"
    return ""


def _rules(element: dict, labels: dict) -> list[str]:
    rules = []
    if "slicing" in element:
        paths = ", ".join(f"{d['type']}:{d['path']}" for d in element["slicing"].get("discriminator", []))
        rules.append(labels["sliced"].format(paths=paths, rules=element["slicing"].get("rules", "")))
    for element_type in element.get("type", []):
        targets = element_type.get("targetProfile")
        if targets:
            rules.append(f"{labels['target']} " + ", ".join(_code(target) for target in targets))
        else:
            rules.append(f"{labels['types']} {element_type['code']}")
    for key, value in element.items():
        if key.startswith("fixed"):
            rules.append(f"{labels['fixed']} {_code(value)}")
        elif key.startswith("pattern"):
            rules.append(f"{labels['pattern']} {_code(value)}")
    if "binding" in element:
        rules.append(f"{labels['binding']} {element['binding']['strength']} {_code(element['binding']['valueSet'])}")
    return rules


def _example_for(structure: dict, examples: list[tuple[Path, dict]]) -> Path | None:
    for path, example in examples:
        if structure["url"] in example.get("meta", {}).get("profile", []):
            return path
    return None


def render_profile(structure: dict, source: Path, examples: list[tuple[Path, dict]], language: str) -> str:
    """Render the page of one StructureDefinition in `language`."""
    labels = LABELS[language]
    other = "fr" if language == "en" else "en"
    # French typography puts a space before a colon.
    colon = " :" if language == "fr" else ":"
    lines = [
        f"# {localized(structure, 'title', language)}",
        "",
        f"{labels['generated'].format(source=source.relative_to(REPOSITORY).as_posix() if source.is_relative_to(REPOSITORY) else source.name)} "
        f"{labels['other_language'].format(page=page_name(structure['id'], other))}",
        "",
        f"- {labels['canonical']}{colon} `{structure['url']}`",
        f"- {labels['base']}{colon} `{structure['baseDefinition']}`",
        f"- {labels['version']}{colon} {structure.get('version', '')}; {labels['status']}{colon} {structure.get('status', '')}",
        "",
        localized(structure, "description", language) or "",
        "",
        f"## {labels['constraints']}",
        "",
        f"| {labels['element']} | {labels['cardinality']} | {labels['rule']} | {labels['meaning']} |",
        "| --- | --- | --- | --- |",
    ]
    invariants = []
    for element in structure["differential"]["element"]:
        invariants += element.get("constraint", [])
        rules = _rules(element, labels)
        meaning = localized(element, "short", language) or ""
        if not rules and not _cardinality(element) and not meaning:
            continue
        lines.append(f"| {_element_label(element)} | {_cardinality(element)} | {'; '.join(rules)} | {_cell(meaning)} |")

    if invariants:
        lines += ["", f"## {labels['invariants']}", "",
                  f"| {labels['key']} | {labels['severity']} | {labels['meaning']} | {labels['expression']} |",
                  "| --- | --- | --- | --- |"]
        for invariant in invariants:
            human = translation(invariant.get("_human"), language) if language != "en" else None
            lines.append(f"| {invariant['key']} | {invariant['severity']} | {_cell(human or invariant['human'])} | "
                         f"{_code(invariant['expression'])} |")

    lines += ["", f"## {labels['example']}", ""]
    example = _example_for(structure, examples)
    if example:
        link = Path("..", "..", example.relative_to(REPOSITORY)).as_posix() if example.is_relative_to(REPOSITORY) else example.name
        lines.append(labels["example_text"].format(name=example.name, link=link))
    else:
        lines.append(labels["no_example"])
    return "\n".join(lines) + "\n"


def _codesystem_section(codesystem: dict, language: str, labels: dict) -> list[str]:
    lines = [f"### {localized(codesystem, 'title', language)}", "", f"`{codesystem['url']}`", "",
             localized(codesystem, "description", language) or "", ""]
    if codesystem.get("content") != "complete":
        return lines + [labels["content_not_present"], ""]
    lines += [f"| {labels['code']} | {labels['display']} | {labels['definition']} |", "| --- | --- | --- |"]
    for concept in codesystem.get("concept", []):
        display = concept.get("display", "")
        if language == "en":
            display = next((d["value"] for d in concept.get("designation", []) if d.get("language") == "en"), display)
        lines.append(f"| `{concept['code']}` | {_cell(display)} | {_cell(concept.get('definition', ''))} |")
    return lines + [""]


def _valueset_includes(valueset: dict, labels: dict) -> str:
    parts = []
    for include in valueset.get("compose", {}).get("include", []):
        if "concept" in include:
            parts.append(", ".join(f"`{include['system']}#{concept['code']}`" for concept in include["concept"]))
        else:
            parts.append(labels["all_codes_of"].format(system=f"`{include['system']}`"))
    return "; ".join(parts)


def render_index(resources: list[tuple[Path, dict]], language: str) -> str:
    """Render the index page in `language`: profiles, code systems, value sets and naming systems."""
    labels = LABELS[language]
    other = "fr" if language == "en" else "en"
    by_type: dict[str, list[dict]] = {}
    for _, resource in resources:
        by_type.setdefault(resource["resourceType"], []).append(resource)

    lines = [f"# {labels['index_title']}", "",
             f"{labels['generated_index']} {labels['other_language'].format(page=index_name(other))}", "",
             labels["index_intro"].format(package=PACKAGE_NAME, version=PACKAGE_VERSION), "",
             f"## {labels['profiles']}", "",
             f"| {labels['profile']} | {labels['resource']} | {labels['title']} |", "| --- | --- | --- |"]
    for structure in sorted(by_type.get("StructureDefinition", []), key=lambda s: s["id"]):
        lines.append(f"| [{structure['id']}]({page_name(structure['id'], language)}) | {structure['type']} | "
                     f"{_cell(localized(structure, 'title', language))} |")

    lines += ["", f"## {labels['code_systems']}", ""]
    for codesystem in sorted(by_type.get("CodeSystem", []), key=lambda c: c["id"]):
        lines += _codesystem_section(codesystem, language, labels)

    lines += [f"## {labels['value_sets']}", "", f"| {labels['url']} | {labels['title']} | {labels['includes']} |", "| --- | --- | --- |"]
    for valueset in sorted(by_type.get("ValueSet", []), key=lambda v: v["id"]):
        lines.append(f"| `{valueset['url']}` | {_cell(localized(valueset, 'title', language))} | {_valueset_includes(valueset, labels)} |")

    lines += ["", f"## {labels['naming_systems']}", "", f"| {labels['url']} | {labels['definition']} |", "| --- | --- |"]
    for naming in sorted(by_type.get("NamingSystem", []), key=lambda n: n["id"]):
        unique = next((u["value"] for u in naming.get("uniqueId", []) if u.get("preferred")), naming["uniqueId"][0]["value"])
        lines.append(f"| `{unique}` | {_cell(localized(naming, 'description', language))} |")
    return "\n".join(lines) + "\n"


def render_all(profiles_dir: Path, output_dir: Path, examples_dir: Path = EXAMPLES_DIR) -> dict[Path, str]:
    """Render every page, as a map from output path to Markdown text."""
    resources = read_resources(profiles_dir)
    examples = read_resources(examples_dir) if examples_dir.is_dir() else []
    pages = {}
    for language in LANGUAGES:
        pages[output_dir / index_name(language)] = render_index(resources, language)
        for source, resource in resources:
            if resource["resourceType"] == "StructureDefinition":
                pages[output_dir / page_name(resource["id"], language)] = render_profile(resource, source, examples, language)
    return pages


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sonco_fhir.profiles.docs", description=__doc__.split("\n\n")[0])
    parser.add_argument("--profiles-dir", type=Path, default=None,
                        help="folder of conformance resources (default: SONCO_PROFILES_DIR or profiles/)")
    parser.add_argument("--output-dir", type=Path, default=REPOSITORY / "docs" / "profiles",
                        help="folder the pages are written to (default: docs/profiles/)")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 when a page is missing or out of date")
    arguments = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    profiles_dir = arguments.profiles_dir or load_settings().profiles_dir
    try:
        pages = render_all(profiles_dir, arguments.output_dir)
    except ConformanceError as error:
        log.error("Failed to generate the profile pages: %s", error)
        return 1

    stale = [path for path, text in pages.items() if not path.exists() or path.read_text(encoding="utf-8") != text]
    if arguments.check:
        for path in stale:
            log.error("Out of date: %s; run python -m sonco_fhir.profiles.docs", path)
        return 1 if stale else 0
    arguments.output_dir.mkdir(parents=True, exist_ok=True)
    for path in stale:
        path.write_text(pages[path], encoding="utf-8")
    log.info("Wrote %d of %d pages to %s", len(stale), len(pages), arguments.output_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
