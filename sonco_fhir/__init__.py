"""sonco-fhir: the FHIR interoperability adapter of the SONCO cohort."""

__version__ = "0.1.0"
