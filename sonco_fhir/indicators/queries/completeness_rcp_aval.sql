-- Completeness: share of prescriptions with a genomic report with an RCP d'aval date known to the day.
SELECT request AS unit, request, patient, rcp_aval_day IS NOT NULL AS hit
FROM request_milestone
WHERE has_report
