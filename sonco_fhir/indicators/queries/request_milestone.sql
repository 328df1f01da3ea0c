-- One row per SONCO prescription (ServiceRequest) with the day of each
-- milestone of its pathway and its strata. Every indicator query reads this
-- table. A day is the calendar day in Europe/Paris (macro paris_date), NULL
-- when the milestone's resource is missing or its date is not known to the
-- day. The has_* columns tell whether the milestone's resource exists.
-- Medications of the cohort with their start day; medication_key is the
-- code, or the lower-case text when no code is given.
CREATE VIEW patient_medication AS
SELECT patient,
       lower(trim(medication_text)) AS medication_text,
       medication_code,
       coalesce(medication_code, lower(trim(medication_text))) AS medication_key,
       paris_date(coalesce(start_period, start_at)) AS start_day
FROM medication_statement
WHERE patient IS NOT NULL AND coalesce(status, '') NOT IN ('entered-in-error', 'not-taken');

CREATE TABLE request_milestone AS
WITH validation AS (
    -- RCP d'amont validation: the end of the execution period of a Task that
    -- does not record a refusal (code refused, or text refusée when no code).
    SELECT request, min(paris_date(validated_on)) AS day
    FROM rcp_amont_task
    WHERE request IS NOT NULL
      AND coalesce(decision, '') <> 'refused'
      AND NOT (decision IS NULL AND lower(coalesce(decision_text, '')) IN ('refusée', 'refusee', 'refused'))
    GROUP BY request
),
reception AS (
    SELECT request, min(paris_date(received)) AS day
    FROM specimen
    WHERE request IS NOT NULL
    GROUP BY request
),
tumour_sample AS (
    -- The first tumour sample received; a sample not typed BLD counts as tumour.
    SELECT request,
           arg_min(coalesce(preservation, '?'), coalesce(paris_date(received), DATE '9999-12-31')) AS preservation,
           count(*) AS samples
    FROM specimen
    WHERE request IS NOT NULL AND coalesce(type, '') <> 'BLD'
    GROUP BY request
),
sequencing AS (
    SELECT request, min(paris_date(coalesce(performed_end, performed_at))) AS day
    FROM sequencing_procedure
    WHERE request IS NOT NULL AND status = 'completed'
    GROUP BY request
),
failure AS (
    SELECT DISTINCT request
    FROM sequencing_failure
    WHERE request IS NOT NULL
),
resampling AS (
    -- A sequencing Procedure of the request whose followUp requests a new
    -- tumour sample (code new-sample), whatever the Procedure's status.
    SELECT DISTINCT request
    FROM sequencing_procedure
    WHERE request IS NOT NULL AND follow_up = 'new-sample'
),
report AS (
    SELECT service_request AS request, min(paris_date(issued)) AS day
    FROM genomic_report
    WHERE service_request IS NOT NULL AND status IN ('final', 'amended', 'corrected', 'appended')
    GROUP BY service_request
),
linked_plan AS (
    -- RCP d'aval CarePlans that name one of the request's reports in supportingInfo.
    SELECT DISTINCT report.service_request AS request, plan.id AS plan, paris_date(plan.created) AS day
    FROM rcp_aval AS plan
    JOIN genomic_report AS report ON report.id = plan.report
    WHERE report.service_request IS NOT NULL
),
request_base AS (
    SELECT
        request.id AS request,
        request.patient,
        coalesce(request.lab, '?') AS lab,
        coalesce(request.preindication, '?') AS preindication,
        coalesce(request.hospital, '?') AS hospital,
        paris_date(request.authored_on) AS prescribed_day,
        validation.request IS NOT NULL AS has_validation,
        validation.day AS validated_day,
        reception.request IS NOT NULL AS has_reception,
        reception.day AS received_day,
        coalesce(tumour_sample.samples, 0) AS tumour_samples,
        coalesce(tumour_sample.preservation, '?') AS sample_type,
        sequencing.request IS NOT NULL AS has_sequencing,
        sequencing.day AS sequenced_day,
        failure.request IS NOT NULL AS has_failure,
        resampling.request IS NOT NULL AS resampling_requested,
        report.request IS NOT NULL AS has_report,
        report.day AS reported_day
    FROM service_request AS request
    LEFT JOIN validation ON validation.request = request.id
    LEFT JOIN reception ON reception.request = request.id
    LEFT JOIN tumour_sample ON tumour_sample.request = request.id
    LEFT JOIN sequencing ON sequencing.request = request.id
    LEFT JOIN failure ON failure.request = request.id
    LEFT JOIN resampling ON resampling.request = request.id
    LEFT JOIN report ON report.request = request.id
),
chosen_plan AS (
    -- The request's RCP d'aval: the earliest CarePlan naming one of its
    -- reports, otherwise the patient's earliest RCP d'aval on or after the
    -- first report day (any day when the report day is unknown).
    SELECT base.request,
           coalesce(
               (SELECT arg_min(linked.plan, coalesce(linked.day, DATE '9999-12-31')) FROM linked_plan AS linked
                WHERE linked.request = base.request),
               (SELECT arg_min(plan.id, coalesce(paris_date(plan.created), DATE '9999-12-31')) FROM rcp_aval AS plan
                WHERE plan.patient = base.patient
                  AND (base.reported_day IS NULL OR paris_date(plan.created) >= base.reported_day))
           ) AS plan
    FROM request_base AS base
    WHERE base.has_report
),
plan_day AS (
    SELECT DISTINCT id AS plan, paris_date(created) AS day FROM rcp_aval
),
recommended_drug AS (
    SELECT care_plan AS plan,
           lower(trim(product_text)) AS product_text,
           product_code
    FROM care_plan_recommendation
    WHERE recommendation = 'targeted-therapy'
),
treatment AS (
    -- Start of the recommended treatment: the earliest medication of the
    -- patient, matching a targeted-therapy drug of the chosen RCP d'aval by
    -- code or by text (case-insensitive), that starts on or after its day.
    SELECT chosen_plan.request, min(medication.start_day) AS day
    FROM chosen_plan
    JOIN request_base AS base ON base.request = chosen_plan.request
    JOIN plan_day ON plan_day.plan = chosen_plan.plan
    JOIN recommended_drug AS drug ON drug.plan = chosen_plan.plan
    JOIN patient_medication AS medication ON medication.patient = base.patient
        AND ((drug.product_code IS NOT NULL AND drug.product_code = medication.medication_code)
             OR (drug.product_text IS NOT NULL AND drug.product_text = medication.medication_text))
    WHERE plan_day.day IS NULL OR medication.start_day >= plan_day.day
    GROUP BY chosen_plan.request
),
cancer AS (
    -- The patient's first recorded CIM-10 diagnosis, as its category (C25.9 gives C25).
    SELECT patient, arg_min(split_part(code, '.', 1), coalesce(paris_date(recorded), DATE '9999-12-31')) AS cancer_type
    FROM cancer_condition
    WHERE patient IS NOT NULL AND code IS NOT NULL
    GROUP BY patient
)
SELECT
    base.*,
    coalesce(cancer.cancer_type, '?') AS cancer_type,
    chosen_plan.plan AS rcp_plan,
    chosen_plan.plan IS NOT NULL AS has_rcp_aval,
    plan_day.day AS rcp_aval_day,
    EXISTS (SELECT 1 FROM recommended_drug WHERE recommended_drug.plan = chosen_plan.plan) AS recommends_targeted_therapy,
    treatment.request IS NOT NULL AS has_treatment,
    treatment.day AS treatment_day
FROM request_base AS base
LEFT JOIN cancer ON cancer.patient = base.patient
LEFT JOIN chosen_plan ON chosen_plan.request = base.request
LEFT JOIN plan_day ON plan_day.plan = chosen_plan.plan
LEFT JOIN treatment ON treatment.request = base.request
