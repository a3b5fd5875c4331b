-- title: Model {model_name}: evaluation metrics by version
-- description: Hold-out metrics of every registered version (from the registry's metadata.json),
-- description: against the baseline on the same rows (the majority class; for a regression model, the
-- description: training mean); the production alias is marked.
-- requires: model
-- order: 60
SELECT version, is_production,
       auc_pr, auc_roc, f1, precision, recall, baseline_auc_pr, baseline_auc_roc, threshold, tp, fp, tn, fn,  -- @if binary
       accuracy, f1_macro, f1_weighted, log_loss, baseline_accuracy, baseline_f1_macro, baseline_log_loss,  -- @if multiclass
       rmse, mae, r2, baseline_rmse, baseline_mae, baseline_r2,  -- @if regression
       created_at
FROM model_registry
WHERE model_name = {model_literal}
ORDER BY version
