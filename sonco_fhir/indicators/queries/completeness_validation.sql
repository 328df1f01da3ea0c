-- Completeness: share of every prescription with the RCP d'amont validation date known to the day.
SELECT request AS unit, request, patient, validated_day IS NOT NULL AS hit
FROM request_milestone
WHERE TRUE
