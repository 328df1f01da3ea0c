"""Every user message exists in French and English, with the same placeholders."""

import string

from sonco_fhir import i18n


def _placeholders(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


def test_catalogues_same_keys():
    french, english = i18n._catalogue("fr"), i18n._catalogue("en")
    assert sorted(french.keys() - english.keys()) == []
    assert sorted(english.keys() - french.keys()) == []


def test_catalogues_same_placeholders():
    french, english = i18n._catalogue("fr"), i18n._catalogue("en")
    different = [key for key in french if _placeholders(french[key]) != _placeholders(english[key])]
    assert different == []


def test_missing_english_key_falls_back(monkeypatch):
    monkeypatch.setitem(i18n._catalogue("fr"), "test.only_french", "seulement {x}")
    i18n.set_language("en")
    try:
        assert i18n.t("test.only_french", x=1) == "seulement 1"
    finally:
        i18n.set_language("fr")
