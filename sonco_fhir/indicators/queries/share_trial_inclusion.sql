-- Share of reported patients included in a clinical trial: a ResearchSubject
-- whose status shows an inclusion (on-study, on-study-intervention,
-- on-study-observation, follow-up or off-study).
-- Unit: the patient.
WITH included AS (
    SELECT DISTINCT patient
    FROM research_subject
    WHERE status IN ('on-study', 'on-study-intervention', 'on-study-observation', 'follow-up', 'off-study')
)
SELECT request.patient AS unit, request.request, request.patient,
       included.patient IS NOT NULL AS hit
FROM request_milestone AS request
LEFT JOIN included ON included.patient = request.patient
WHERE request.has_report
