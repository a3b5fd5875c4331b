package io.streamsight.jvm;

import org.apache.spark.sql.api.java.UDF0;
import org.apache.spark.sql.expressions.UserDefinedFunction;
import org.apache.spark.sql.functions;
import org.apache.spark.sql.types.DataTypes;

/**
 * A per-micro-batch constant (the batch id) as a Spark SQL UDF instead of a literal
 * ({@code streaming_jobs.jvm.constant}). Generated code refers to a UDF object, where it would
 * write a literal's value into its source: with a literal, every micro-batch's write stage was new
 * source to compile.
 */
public final class ConstantLong implements UDF0<Long> {
  private static final long serialVersionUID = 1L;
  private final long value;

  public ConstantLong(long value) {
    this.value = value;
  }

  /** The function to register; deterministic, and not folded (a UDF is never foldable). */
  public static UserDefinedFunction function(long value) {
    return functions.udf(new ConstantLong(value), DataTypes.LongType).asNonNullable();
  }

  @Override
  public Long call() {
    return value;
  }
}
