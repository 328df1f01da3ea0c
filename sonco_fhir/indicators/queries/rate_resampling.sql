-- Re-sampling rate: share of prescriptions with a tumour sample (Specimen.type
-- other than BLD) for which the lab asked for a new tumour sample: a sequencing
-- Procedure with followUp code new-sample (CodeSystem sonco-sequencing-follow-up),
-- which the SPICE and HYGEN connectors write from nouveau_prelevement = oui.
SELECT request AS unit, request, patient, resampling_requested AS hit
FROM request_milestone
WHERE tumour_samples >= 1
