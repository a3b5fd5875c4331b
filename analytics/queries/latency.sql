-- title: End-to-end latency: produce time to lake write
-- description: Seconds from the Kafka record timestamp (produce time) to the lake write:
-- description: 'ingest (bronze)' uses the bronze ingest time of each silver row, predictions use scored_at. Exact percentiles
-- description: over latencies rounded to the millisecond.
-- order: 30
-- dashboard: yes
WITH latencies AS (
    SELECT 'ingest (bronze)' AS stage,
           round((unix_micros(_ingest_time) - unix_micros(_kafka_timestamp)) / 1e6, 3) AS latency_s
    FROM {stream}_silver
    UNION ALL                                                                            -- @if model
    SELECT 'predictions' AS stage,                                                       -- @if model
           round((unix_micros(scored_at) - unix_micros(_kafka_timestamp)) / 1e6, 3)      -- @if model
    FROM {stream}_predictions                                                            -- @if model
),
stats AS (
    SELECT stage,
           count(*) AS events,
           percentile(latency_s, array(0.5, 0.95, 0.99)) AS p,
           max(latency_s) AS max_s,
           avg(latency_s) AS avg_s
    FROM latencies
    WHERE latency_s IS NOT NULL
    GROUP BY stage
)
SELECT stage, events, p[0] AS p50_s, p[1] AS p95_s, p[2] AS p99_s, max_s, round(avg_s, 3) AS avg_s
FROM stats
ORDER BY CASE stage WHEN 'ingest (bronze)' THEN 0 ELSE 1 END, stage
