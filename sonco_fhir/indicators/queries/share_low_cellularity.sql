-- Share of tumour samples (type other than BLD) of SONCO prescriptions whose
-- tumour cellularity (extension sonco-tumour-cellularity, in percent) is
-- below 20 %. The threshold is a SONCO choice: the references confirm none.
-- Change it here, and in the definition of the indicator in the locales.
-- Population: tumour samples with a recorded cellularity. Unit: the sample.
SELECT specimen.id AS unit, specimen.request, request.patient,
       TRY_CAST(specimen.cellularity AS DOUBLE) < 20 AS hit
FROM specimen
JOIN request_milestone AS request ON request.request = specimen.request
WHERE coalesce(specimen.type, '') <> 'BLD' AND TRY_CAST(specimen.cellularity AS DOUBLE) IS NOT NULL
