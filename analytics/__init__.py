"""Analytics over the lake: SQL views, ad-hoc Spark SQL and the HTML report.

* :mod:`analytics.views` -- one temporary view per lake table of every stream contract
  (``<stream>_bronze``, ``<stream>_silver``, ``<stream>_dead_letter``, ``<stream>_predictions``,
  ``<stream>_gold_<aggregate>``) plus ``model_registry`` built from the model registry's JSON files.
  Tables that do not exist yet are empty views with their declared schema, so queries never fail on
  a fresh lake.
* :mod:`analytics.sql` -- :func:`~analytics.sql.run_sql`: run one query over those views and return a
  fixed-width text table or JSON Lines.
* :mod:`analytics.catalog` -- the named queries in ``analytics/queries/*.sql`` (one per chart) and
  their contract-driven placeholders.
* :mod:`analytics.report` -- :func:`~analytics.report.build_report`: PNG charts plus one
  self-contained HTML report.
* :mod:`analytics.cli` -- the functions the ``streamsight sql`` and ``streamsight report`` commands
  call.
"""
