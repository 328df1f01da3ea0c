-- Share of sequenced prescriptions whose sequencing failed for low tumour
-- cellularity (failure reason low-tumour-cellularity). The profiles record
-- no cellularity percentage, so the failure reason is the only source.
-- Population: prescriptions with a genomic report or a failed sequencing.
SELECT request AS unit, request, patient, low_cellularity AS hit
FROM request_milestone
WHERE has_report OR has_failure
