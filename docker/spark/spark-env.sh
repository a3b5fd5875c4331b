# Sourced by Spark's launch scripts (spark-submit, spark-class, and pyspark starting its JVM) in the
# Streamsight image, as $SPARK_CONF_DIR/spark-env.sh.
#
# Advertise this container's IP address rather than its hostname: a container's hostname (its id,
# or the `hostname:` of a compose service) is not resolvable from other containers, and containers
# made by `docker compose run` carry no service alias. Executors connect back to the driver at
# spark.driver.host, which Spark derives from SPARK_LOCAL_HOSTNAME. Set SPARK_LOCAL_HOSTNAME (or
# spark.driver.host) yourself to override.
if [ -z "${SPARK_LOCAL_HOSTNAME:-}" ]; then
  SPARK_LOCAL_HOSTNAME="$(hostname -i 2>/dev/null | awk '{ print $1 }')"
  if [ -n "$SPARK_LOCAL_HOSTNAME" ]; then
    export SPARK_LOCAL_HOSTNAME
  else
    unset SPARK_LOCAL_HOSTNAME
  fi
fi
