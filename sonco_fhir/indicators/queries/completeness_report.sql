-- Completeness: share of every prescription with a genomic report issue date known to the day.
SELECT request AS unit, request, patient, reported_day IS NOT NULL AS hit
FROM request_milestone
WHERE TRUE
