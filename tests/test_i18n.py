"""Every user message exists in French and English, with the same placeholders."""

import string

from sonco_fhir import i18n


def _placeholders(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


def test_french_and_english_catalogues_have_the_same_keys():
    french, english = i18n._catalogue("fr"), i18n._catalogue("en")
    assert sorted(french.keys() - english.keys()) == []
    assert sorted(english.keys() - french.keys()) == []


def test_each_message_has_the_same_placeholders_in_both_languages():
    french, english = i18n._catalogue("fr"), i18n._catalogue("en")
    different = [key for key in french if _placeholders(french[key]) != _placeholders(english[key])]
    assert different == []


def test_a_key_missing_from_english_falls_back_to_french(monkeypatch):
    monkeypatch.setitem(i18n._catalogue("fr"), "test.only_french", "seulement {x}")
    i18n.set_language("en")
    try:
        assert i18n.t("test.only_french", x=1) == "seulement 1"
    finally:
        i18n.set_language("fr")
