-- Share of FFPE samples among the tumour samples (type other than BLD) of
-- SONCO prescriptions whose preservation is recorded (frozen or ffpe).
-- Unit: the sample.
SELECT specimen.id AS unit, specimen.request, request.patient,
       specimen.preservation = 'ffpe' AS hit
FROM specimen
JOIN request_milestone AS request ON request.request = specimen.request
WHERE coalesce(specimen.type, '') <> 'BLD' AND specimen.preservation IN ('frozen', 'ffpe')
