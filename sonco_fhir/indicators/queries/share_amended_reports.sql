-- Share of genomic reports amended after their first issue (status amended
-- or corrected) among the reported genomic reports of SONCO prescriptions.
-- Unit: the report.
SELECT report.id AS unit, report.service_request AS request, report.patient,
       report.status IN ('amended', 'corrected') AS hit
FROM genomic_report AS report
JOIN request_milestone AS request ON request.request = report.service_request
WHERE report.status IN ('final', 'amended', 'corrected', 'appended')
