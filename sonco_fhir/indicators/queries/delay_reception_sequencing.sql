-- Calendar days from first sample reception to the end of the sequencing (Procedure.performedPeriod.end or performedDateTime).
-- Population: prescriptions with a completed sequencing Procedure. A population member whose start
-- or end day is unknown has a NULL value: excluded from the statistics and
-- counted.
SELECT request AS unit, request, patient, sequenced_day - received_day AS value
FROM request_milestone
WHERE has_sequencing
