"""Mapping-file checks: a broken mapping file is reported with its path, place and fix."""

import shutil

import pytest

from sonco_fhir.config import load_settings
from sonco_fhir.errors import ConfigurationError
from sonco_fhir.pipeline import build_engine, map_source
from conftest import CASES, REPOSITORY


@pytest.fixture
def mappings_copy(tmp_path, monkeypatch):
    target = tmp_path / "mappings"
    shutil.copytree(REPOSITORY / "mappings", target)
    monkeypatch.setenv("SONCO_MAPPINGS_DIR", str(target))
    return target


def map_ans_admission():
    settings = load_settings()
    engine = build_engine(settings, read_only=True)
    return map_source("hl7v2", [CASES / "hl7v2-ansforge-pamfr-cisis" / "SGL_admission_ADT_A01.er7"], settings, engine)


def test_invalid_yaml_names_line(mappings_copy):
    path = mappings_copy / "hl7v2" / "adt-patient.yaml"
    path.write_text(path.read_text(encoding="utf-8") + "\n  bad: [unclosed\n", encoding="utf-8")

    with pytest.raises(ConfigurationError) as raised:
        map_ans_admission()

    assert str(path) in str(raised.value)
    assert "YAML invalide" in str(raised.value)
    assert "ligne" in str(raised.value)


def test_unknown_key_lists_known(mappings_copy):
    path = mappings_copy / "hl7v2" / "adt-patient.yaml"
    path.write_text(path.read_text(encoding="utf-8") + "\nresource_list: []\n", encoding="utf-8")

    with pytest.raises(ConfigurationError) as raised:
        map_ans_admission()

    assert "resource_list" in str(raised.value)
    assert "applies_to" in str(raised.value)


def test_template_error_sets_record_aside(mappings_copy):
    path = mappings_copy / "hl7v2" / "adt-patient.yaml"
    text = path.read_text(encoding="utf-8").replace("""year(PID["7"])""", """no_such_function(PID["7"])""")
    path.write_text(text, encoding="utf-8")

    _, summary = map_ans_admission()

    assert summary.records_rejected == 1
    assert "adt-patient.yaml" in summary.problems[0].message
    assert "resources[0].template" in summary.problems[0].message
    assert summary.problems[0].fix == "corrigez le modèle dans le fichier de mapping"
