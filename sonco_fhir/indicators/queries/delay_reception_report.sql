-- Calendar days from first sample reception to the first genomic report (DiagnosticReport.issued): the lab turnaround.
-- Population: prescriptions with a genomic report. A population member whose start
-- or end day is unknown has a NULL value: excluded from the statistics and
-- counted.
SELECT request AS unit, request, patient, reported_day - received_day AS value
FROM request_milestone
WHERE has_report
