-- Delay from prescription to report: calendar days in Europe/Paris from
-- ServiceRequest.authoredOn to the issued day of its first genomic report,
-- per lab and for all labs ('*').
-- Population: SONCO ServiceRequests named in basedOn by at least one genomic
-- report with status final, amended, corrected or appended. A request whose
-- authoredOn or every report's issued is missing or not known to the day is
-- counted in `excluded` and not in the statistics.
-- Percentiles use quantile_cont (linear interpolation between the two
-- nearest delays), so the median of an even count is the mean of the two middle delays.
WITH first_report AS (
    SELECT
        report.service_request,
        min(paris_date(report.issued)) AS issued_day
    FROM genomic_report AS report
    JOIN service_request AS request ON request.id = report.service_request
    WHERE report.status IN ('final', 'amended', 'corrected', 'appended')
    GROUP BY report.service_request
),
delay AS (
    SELECT
        coalesce(request.lab, '?') AS lab,
        first_report.issued_day - paris_date(request.authored_on) AS days
    FROM first_report
    JOIN service_request AS request ON request.id = first_report.service_request
)
SELECT
    CASE WHEN grouping(lab) = 1 THEN '*' ELSE lab END AS stratum,
    count(days) AS count,
    median(days) AS median,
    quantile_cont(days, 0.25) AS p25,
    quantile_cont(days, 0.75) AS p75,
    quantile_cont(days, 0.9) AS p90,
    count(*) FILTER (WHERE days IS NULL) AS excluded
FROM delay
GROUP BY GROUPING SETS ((lab), ())
ORDER BY stratum
