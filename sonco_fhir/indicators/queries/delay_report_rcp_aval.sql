-- Calendar days from first genomic report to the RCP d'aval (CarePlan.created).
-- Population: prescriptions with an RCP d'aval. A population member whose start
-- or end day is unknown has a NULL value: excluded from the statistics and
-- counted.
SELECT request AS unit, request, patient, rcp_aval_day - reported_day AS value
FROM request_milestone
WHERE has_rcp_aval
