"""Loading: transaction bundles into the cohort's HAPI FHIR server."""
