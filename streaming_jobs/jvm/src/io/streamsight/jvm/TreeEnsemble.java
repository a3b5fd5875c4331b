package io.streamsight.jvm;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.io.UncheckedIOException;
import org.apache.spark.sql.api.java.UDF1;

/**
 * The weighted sum of a fitted tree ensemble's predictions (an MLlib GBT model's margin), as a
 * Spark SQL UDF over the array of its feature values ({@code ml.compiled}).
 *
 * <p>MLlib's own scoring builds a vector per row and walks JVM node objects; here each tree is
 * four flat arrays, walked from the root: {@code feature[n] < 0} marks a leaf with value
 * {@code value[n]}; otherwise the row goes left when {@code x[feature[n]] <= threshold[n]}
 * (NaN goes right), or, for a categorical split, when {@code x[feature[n]]} is one of
 * {@code categories[n]}. The sum adds the trees in order, {@code weight[t] * prediction[t]}.
 *
 * <p>Spec (JSON): {@code {"trees": [{"feature": [...], "threshold": [...], "left": [...],
 * "right": [...], "value": [...], "categories": [null | [...], ...]}, ...], "weights": [...]}}.
 */
public final class TreeEnsemble implements UDF1<scala.collection.Seq<Object>, Double> {
  private static final long serialVersionUID = 1L;

  private final int[][] feature;
  private final double[][] threshold;
  private final int[][] left;
  private final int[][] right;
  private final double[][] value;
  private final double[][][] categories;
  private final double[] weights;
  private final int width;

  public TreeEnsemble(String spec) {
    JsonNode root;
    try {
      root = new ObjectMapper().readTree(spec);
    } catch (IOException e) {
      throw new UncheckedIOException(e);
    }
    JsonNode trees = root.get("trees");
    int n = trees.size();
    feature = new int[n][];
    threshold = new double[n][];
    left = new int[n][];
    right = new int[n][];
    value = new double[n][];
    categories = new double[n][][];
    weights = doubles(root.get("weights"));
    if (weights.length != n) {
      throw new IllegalArgumentException(n + " trees but " + weights.length + " weights");
    }
    int widest = 0;
    for (int t = 0; t < n; t++) {
      JsonNode tree = trees.get(t);
      feature[t] = ints(tree.get("feature"));
      threshold[t] = doubles(tree.get("threshold"));
      left[t] = ints(tree.get("left"));
      right[t] = ints(tree.get("right"));
      value[t] = doubles(tree.get("value"));
      JsonNode cats = tree.get("categories");
      categories[t] = new double[cats.size()][];
      for (int i = 0; i < cats.size(); i++) {
        categories[t][i] = cats.get(i).isNull() ? null : doubles(cats.get(i));
      }
      for (int f : feature[t]) {
        widest = Math.max(widest, f + 1);
      }
    }
    width = widest;
  }

  private static int[] ints(JsonNode array) {
    int[] out = new int[array.size()];
    for (int i = 0; i < out.length; i++) {
      out[i] = array.get(i).asInt();
    }
    return out;
  }

  private static double[] doubles(JsonNode array) {
    double[] out = new double[array.size()];
    for (int i = 0; i < out.length; i++) {
      out[i] = array.get(i).asDouble();
    }
    return out;
  }

  private static boolean contains(double[] set, double x) {
    for (double v : set) {
      if (v == x) {
        return true;
      }
    }
    return false;
  }

  private double predict(int t, double[] x) {
    int[] feat = feature[t];
    int node = 0;
    while (feat[node] >= 0) {
      double v = x[feat[node]];
      double[] cats = categories[t][node];
      boolean goLeft = cats == null ? v <= threshold[t][node] : contains(cats, v);
      node = goLeft ? left[t][node] : right[t][node];
    }
    return value[t][node];
  }

  @Override
  public Double call(scala.collection.Seq<Object> features) {
    if (features == null || features.length() < width) {
      throw new IllegalArgumentException("expected " + width + " feature values, got "
          + (features == null ? "null" : String.valueOf(features.length())));
    }
    double[] x = new double[features.length()];
    for (int i = 0; i < x.length; i++) {
      Object v = features.apply(i);
      x[i] = v == null ? Double.NaN : ((Number) v).doubleValue();
    }
    double sum = 0.0;
    for (int t = 0; t < weights.length; t++) {
      sum += predict(t, x) * weights[t];
    }
    return sum;
  }
}
