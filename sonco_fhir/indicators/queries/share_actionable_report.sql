-- Share of genomic reports with at least one actionable alteration: a
-- therapeutic-implication Observation among the report's results, or one
-- derived from a result of the report.
-- Population: genomic reports (status final, amended, corrected or appended)
-- based on a SONCO prescription. Unit: the report.
WITH actionable AS (
    SELECT result.report
    FROM report_result AS result
    JOIN therapeutic_implication AS implication ON implication.id = result.observation
    UNION
    SELECT result.report
    FROM report_result AS result
    JOIN therapeutic_implication AS implication ON implication.derived_from = result.observation
)
SELECT report.id AS unit, report.service_request AS request, report.patient,
       actionable.report IS NOT NULL AS hit
FROM genomic_report AS report
JOIN request_milestone AS request ON request.request = report.service_request
LEFT JOIN actionable ON actionable.report = report.id
WHERE report.status IN ('final', 'amended', 'corrected', 'appended')
