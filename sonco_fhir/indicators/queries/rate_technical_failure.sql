-- Technical failure rate: share of sequenced prescriptions with a failed
-- sequencing Task.
-- Population: prescriptions with a genomic report or a failed sequencing.
SELECT request AS unit, request, patient, has_failure AS hit
FROM request_milestone
WHERE has_report OR has_failure
