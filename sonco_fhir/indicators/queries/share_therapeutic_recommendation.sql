-- Share of reported patients with a therapeutic recommendation: an RCP
-- d'aval CarePlan recommending targeted-therapy or clinical-trial.
-- Population: patients with a genomic report on a SONCO prescription.
-- Unit: the patient, once per stratum.
WITH recommended AS (
    SELECT DISTINCT patient
    FROM care_plan_recommendation
    WHERE recommendation IN ('targeted-therapy', 'clinical-trial')
)
SELECT request.patient AS unit, request.request, request.patient,
       recommended.patient IS NOT NULL AS hit
FROM request_milestone AS request
LEFT JOIN recommended ON recommended.patient = request.patient
WHERE request.has_report
