-- Calendar days from RCP d'aval to the start of the recommended treatment (MedicationStatement.effective).
-- Population: prescriptions with a started recommended treatment. A population member whose start
-- or end day is unknown has a NULL value: excluded from the statistics and
-- counted.
SELECT request AS unit, request, patient, treatment_day - rcp_aval_day AS value
FROM request_milestone
WHERE has_treatment
