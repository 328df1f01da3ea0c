-- Share of reported patients with a therapeutic recommendation, per lab and
-- for all labs ('*').
-- Denominator: patients, taken from the report's subject, with at least one
-- genomic report (status final, amended, corrected or appended) based on a
-- SONCO ServiceRequest. A patient with requests at both labs counts once in
-- each lab and once in '*'.
-- Numerator: those of them with an RCP d'aval CarePlan recommending
-- targeted-therapy or clinical-trial.
WITH reported AS (
    SELECT DISTINCT
        report.patient,
        coalesce(request.lab, '?') AS lab
    FROM genomic_report AS report
    JOIN service_request AS request ON request.id = report.service_request
    WHERE report.status IN ('final', 'amended', 'corrected', 'appended')
),
recommended AS (
    SELECT DISTINCT patient
    FROM care_plan_recommendation
    WHERE recommendation IN ('targeted-therapy', 'clinical-trial')
)
SELECT
    CASE WHEN grouping(reported.lab) = 1 THEN '*' ELSE reported.lab END AS stratum,
    count(DISTINCT reported.patient) FILTER (WHERE recommended.patient IS NOT NULL) AS numerator,
    count(DISTINCT reported.patient) AS denominator
FROM reported
LEFT JOIN recommended ON recommended.patient = reported.patient
GROUP BY GROUPING SETS ((reported.lab), ())
ORDER BY stratum
