-- Treatment lines before the first genomic report: the number of distinct
-- medications (by code, or by text when no code is given) whose start day is
-- before the report day. The profiles carry no line number, so each new
-- medication counts as a line.
-- Population: prescriptions with a genomic report; one whose report day is
-- unknown is excluded and counted. A medication without a start day is not counted.
SELECT request.request AS unit, request.request, request.patient,
       CASE WHEN request.reported_day IS NULL THEN NULL
            ELSE (SELECT count(DISTINCT medication.medication_key)
                  FROM patient_medication AS medication
                  WHERE medication.patient = request.patient
                    AND medication.start_day < request.reported_day)
       END AS value
FROM request_milestone AS request
WHERE request.has_report
