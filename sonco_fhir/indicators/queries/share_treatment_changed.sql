-- Share of patients whose treatment changed after the RCP d'aval: a
-- medication started on or after the RCP d'aval day that the patient had not
-- started before it.
-- Population: prescriptions whose RCP d'aval day is known. Unit: the patient.
SELECT request.patient AS unit, request.request, request.patient,
       EXISTS (
           SELECT 1 FROM patient_medication AS after
           WHERE after.patient = request.patient AND after.start_day >= request.rcp_aval_day
             AND after.medication_key NOT IN (
                 SELECT before.medication_key FROM patient_medication AS before
                 WHERE before.patient = request.patient AND before.start_day < request.rcp_aval_day
                   AND before.medication_key IS NOT NULL)
       ) AS hit
FROM request_milestone AS request
WHERE request.rcp_aval_day IS NOT NULL
