package io.streamsight.jvm;

import java.time.Instant;
import org.apache.spark.sql.api.java.UDF0;
import org.apache.spark.sql.expressions.UserDefinedFunction;
import org.apache.spark.sql.functions;
import org.apache.spark.sql.types.DataTypes;

/**
 * The current time in microseconds since the epoch, read for every row (a nondeterministic Spark
 * SQL UDF, registered by {@code streaming_jobs.jvm.now_function}).
 *
 * <p>What the streams use for ingest time instead of {@code current_timestamp()}: in a streaming
 * query Spark replaces that with the micro-batch's timestamp as a literal, which whole-stage code
 * generation writes into the generated source, so every micro-batch compiled its stages anew
 * (measured: about a quarter of the JVM time of small micro-batches).
 */
public final class NowMicros implements UDF0<Long> {
  private static final long serialVersionUID = 1L;

  /** The function to register (nondeterministic: never folded, evaluated for every row). */
  public static UserDefinedFunction function() {
    return functions.udf(new NowMicros(), DataTypes.LongType).asNondeterministic();
  }

  @Override
  public Long call() {
    Instant now = Instant.now();
    return now.getEpochSecond() * 1_000_000L + now.getNano() / 1_000;
  }
}
