"""The `sonco-fhir` command line."""
