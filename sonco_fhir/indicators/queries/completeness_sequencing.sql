-- Completeness: share of every prescription with a sequencing end date known to the day.
SELECT request AS unit, request, patient, sequenced_day IS NOT NULL AS hit
FROM request_milestone
WHERE TRUE
