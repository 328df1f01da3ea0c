"""User-facing messages in French (default) and English.

The language comes from `--lang`, then the SONCO_LANG environment
variable, then French. Catalogues are YAML files in `locales/`, one key
per message, with `str.format` placeholders: `locales/LANG.yaml` and the
fragments in `locales/LANG/*.yaml`, one per area, merged in name order.
"""

import os
import sys
from functools import lru_cache
from pathlib import Path

import yaml

LANGUAGES = ("fr", "en")
DEFAULT_LANGUAGE = "fr"
_LOCALES = Path(__file__).with_name("locales")

_current = DEFAULT_LANGUAGE


@lru_cache(maxsize=None)
def _catalogue(lang: str) -> dict[str, str]:
    catalogue: dict[str, str] = {}
    for path in [_LOCALES / f"{lang}.yaml", *sorted((_LOCALES / lang).glob("*.yaml"))]:
        with open(path, encoding="utf-8") as handle:
            fragment = yaml.safe_load(handle) or {}
        duplicated = catalogue.keys() & fragment.keys()
        if duplicated:
            raise ValueError(f"{path}: keys already defined elsewhere: {', '.join(sorted(duplicated))}")
        catalogue.update(fragment)
    return catalogue


def set_language(lang: str | None) -> str:
    global _current
    if lang not in LANGUAGES:
        lang = DEFAULT_LANGUAGE
    _current = lang
    return lang


def language() -> str:
    return _current


def detect_language(argv: list[str] | None = None) -> str:
    """Read the language before the CLI is built, so help text is translated too."""
    argv = sys.argv[1:] if argv is None else argv
    for index, arg in enumerate(argv):
        if arg.startswith("--lang="):
            return arg.split("=", 1)[1]
        if arg == "--lang" and index + 1 < len(argv):
            return argv[index + 1]
    return os.environ.get("SONCO_LANG", DEFAULT_LANGUAGE)


def t(key: str, **values) -> str:
    """Return the message `key` in the current language, formatted with `values`."""
    text = _catalogue(_current).get(key)
    if text is None:
        text = _catalogue(DEFAULT_LANGUAGE).get(key, key)
    return text.format(**values) if values else text
