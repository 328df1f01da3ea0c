-- Completeness: share of prescriptions whose RCP d'aval recommended a targeted therapy with the start date of the recommended treatment known to the day.
SELECT request AS unit, request, patient, treatment_day IS NOT NULL AS hit
FROM request_milestone
WHERE recommends_targeted_therapy
