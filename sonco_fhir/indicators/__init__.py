"""Indicators of the SONCO cohort, computed from FHIR searches and stored as MeasureReports."""
