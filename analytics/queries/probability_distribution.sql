-- title: Failure probability distribution by {category_name}
-- description: Predictions per probability bucket (width 0.05) for each value of the model's
-- description: first categorical feature.
-- requires: binary, category
-- order: 40
SELECT coalesce(CAST({category} AS STRING), '(null)') AS category,
       CAST(least(greatest(floor(probability * 20), 0), 19) AS DOUBLE) / 20 AS bucket_start,
       count(*) AS predictions
FROM {stream}_predictions
WHERE probability IS NOT NULL
GROUP BY 1, 2
ORDER BY 1, 2
