-- Calendar days from prescription to the first genomic report: the end-to-end delay.
-- Population: prescriptions with a genomic report. A population member whose start
-- or end day is unknown has a NULL value: excluded from the statistics and
-- counted.
SELECT request AS unit, request, patient, reported_day - prescribed_day AS value
FROM request_milestone
WHERE has_report
