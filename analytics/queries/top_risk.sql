-- title: Top 15 {key_name} by failure probability
-- description: Highest scored probability per {key_name}, with the average and the latest score
-- description: (by event time) and the number of predicted failures.
-- requires: binary
-- order: 50
-- dashboard: yes
SELECT CAST({key} AS STRING) AS {key},
       count(*) AS predictions,
       max(probability) AS max_probability,
       avg(probability) AS avg_probability,
       max_by(probability, {event_time}) AS latest_probability,
       sum(prediction) AS predicted_failures,
       max({event_time}) AS last_event_time
FROM {stream}_predictions
WHERE probability IS NOT NULL
GROUP BY {key}
ORDER BY max_probability DESC, avg_probability DESC, 1
LIMIT 15
