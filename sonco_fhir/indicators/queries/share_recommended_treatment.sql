-- Share of patients whose RCP d'aval recommended a targeted therapy who
-- started the recommended drug (same code, or same text ignoring case) on or
-- after the RCP d'aval day.
-- Unit: the patient, counted in the numerator of a stratum when one of its
-- prescriptions in that stratum meets the condition.
SELECT patient AS unit, request, patient, has_treatment AS hit
FROM request_milestone
WHERE recommends_targeted_therapy
