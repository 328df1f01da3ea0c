"""Declarative mappings: YAML files of JSON-e templates, run by one engine."""
