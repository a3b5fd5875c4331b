-- title: Dead-letter records by reason code
-- description: Rejected records per error_code, with their share of all dead-letter records and one example reason.
-- order: 20
-- dashboard: yes
WITH counts AS (
    SELECT coalesce(error_code, 'UNKNOWN') AS error_code,
           count(*) AS records,
           min(reason) AS example_reason
    FROM {stream}_dead_letter
    GROUP BY 1
),
total AS (SELECT sum(records) AS n FROM counts)
SELECT c.error_code, c.records, round(100.0 * c.records / t.n, 2) AS pct, c.example_reason
FROM counts c CROSS JOIN total t
ORDER BY c.records DESC, c.error_code
