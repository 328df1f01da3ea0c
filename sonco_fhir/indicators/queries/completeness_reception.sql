-- Completeness: share of every prescription with a sample reception date known to the day.
SELECT request AS unit, request, patient, received_day IS NOT NULL AS hit
FROM request_milestone
WHERE TRUE
