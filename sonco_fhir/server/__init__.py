"""Build, start and stop the HAPI FHIR JPA server of `server/`."""
