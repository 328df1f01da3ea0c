-- Share of patients with a germline finding who were referred to
-- oncogenetics: an RCP d'aval recommendation oncogenetics-referral.
-- Population: reported patients with a variant Observation of germline
-- origin (component 48002-0 = LA6683-2) that is not recorded as absent.
-- Unit: the patient.
WITH germline AS (
    SELECT DISTINCT patient FROM germline_variant WHERE coalesce(presence, 'LA9633-4') <> 'LA9634-2'
),
referred AS (
    SELECT DISTINCT patient FROM care_plan_recommendation WHERE recommendation = 'oncogenetics-referral'
)
SELECT request.patient AS unit, request.request, request.patient,
       referred.patient IS NOT NULL AS hit
FROM request_milestone AS request
JOIN germline ON germline.patient = request.patient
LEFT JOIN referred ON referred.patient = request.patient
WHERE request.has_report
