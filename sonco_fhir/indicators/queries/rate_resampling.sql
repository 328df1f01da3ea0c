-- Re-sampling rate: share of prescriptions with a tumour sample that have
-- two or more tumour samples (Specimen.type other than BLD).
SELECT request AS unit, request, patient, tumour_samples >= 2 AS hit
FROM request_milestone
WHERE tumour_samples >= 1
