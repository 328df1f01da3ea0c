-- Calendar days from prescription (ServiceRequest.authoredOn) to RCP d'amont validation (Task.executionPeriod.end).
-- Population: prescriptions with a validation Task. A population member whose start
-- or end day is unknown has a NULL value: excluded from the statistics and
-- counted.
SELECT request AS unit, request, patient, validated_day - prescribed_day AS value
FROM request_milestone
WHERE has_validation
