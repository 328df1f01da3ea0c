-- Completeness: share of every prescription with the prescription date (ServiceRequest.authoredOn) known to the day.
SELECT request AS unit, request, patient, prescribed_day IS NOT NULL AS hit
FROM request_milestone
WHERE TRUE
