-- Calendar days from RCP d'amont validation to the first sample reception (Specimen.receivedTime).
-- Population: prescriptions with a sample naming it. A population member whose start
-- or end day is unknown has a NULL value: excluded from the statistics and
-- counted.
SELECT request AS unit, request, patient, received_day - validated_day AS value
FROM request_milestone
WHERE has_reception
