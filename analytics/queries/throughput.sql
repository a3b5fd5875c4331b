-- title: Throughput: records written per minute
-- description: Records committed to each lake table per minute of lake write time
-- description: (bronze and dead_letter: ingest_time; silver: _ingest_time).
-- order: 10
-- dashboard: yes
SELECT minute, layer, count(*) AS events
FROM (
    SELECT date_trunc('MINUTE', ingest_time) AS minute, 'bronze' AS layer FROM {stream}_bronze
    UNION ALL
    SELECT date_trunc('MINUTE', _ingest_time), 'silver' FROM {stream}_silver
    UNION ALL
    SELECT date_trunc('MINUTE', ingest_time), 'dead_letter' FROM {stream}_dead_letter
)
WHERE minute IS NOT NULL
GROUP BY minute, layer
ORDER BY minute DESC, layer  -- newest first: a row limit keeps the most recent minutes
