-- title: Predicted classes of {model_name} against the known {label_name}
-- description: Predictions per predicted class, split by the record's own label where it has one
-- description: (unlabelled: live records), with their average probability.
-- requires: multiclass
-- order: 45
SELECT predicted_class,
       coalesce(CAST({label} AS STRING), '(unlabelled)') AS actual,
       count(*) AS predictions,
       avg(probability) AS avg_probability
FROM {stream}_predictions
WHERE predicted_class IS NOT NULL
GROUP BY 1, 2
ORDER BY 1, 2
