package io.streamsight.jvm;

import com.fasterxml.jackson.core.JsonFactory;
import com.fasterxml.jackson.core.JsonParser;
import com.fasterxml.jackson.core.JsonToken;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Set;
import java.util.regex.Pattern;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.RowFactory;
import org.apache.spark.sql.api.java.UDF1;

/**
 * The stream's first screen of a message value against a contract's payload rules, in one pass of
 * Jackson's streaming parser (Spark SQL UDF, registered per contract by
 * {@code streaming_jobs.transforms.screen}).
 *
 * <p>It is <b>sound, not complete</b>: it accepts a value only in the plain form the producers write
 * (an object starting at the first byte, each contract field once, with its JSON type and no null),
 * when every rule of the contract holds. Anything else, valid or not, it leaves to the SQL paths
 * of {@code transforms.py}, which decide it. So it must never accept a value the exact path
 * rejects, and its typed values must equal the SQL fast path's ({@code tests/unit/test_transforms.py}
 * checks both on tricky records). The event time is converted in SQL from the value returned here,
 * so timestamp parsing stays Spark's.
 *
 * <p>Result: a row {@code (_ok, field_1, ..., field_n)} in the contract's field order; the fields
 * are null unless {@code _ok}.
 */
public final class ContractScreen implements UDF1<byte[], Row> {
  private static final long serialVersionUID = 1L;
  private static final JsonFactory JSON = new JsonFactory();
  private static final double EXACT_LONG = 9007199254740992.0; // 2^53: longs compare exactly as doubles

  private static final int STRING = 0, INTEGER = 1, NUMBER = 2, BOOLEAN = 3;

  private final String spec;
  private transient Field[] fields;
  private transient Map<String, Integer> index;
  private transient Set<String> foldedNames;
  private transient Object[] rejected;

  /** @param spec JSON: {"fields": [{"name", "type", "required", "enum", "minimum", "maximum",
   *     "exclusiveMinimum", "exclusiveMaximum", "minLength", "maxLength", "pattern"}, ...]} */
  public ContractScreen(String spec) {
    this.spec = spec;
    compile(); // a bad spec fails where the UDF is registered, not in a task
  }

  private static final class Field {
    String name;
    int type;
    boolean required;
    Double minimum, maximum, exclusiveMinimum, exclusiveMaximum;
    Integer minLength, maxLength;
    Pattern pattern;
    Set<Object> allowed; // enum, as values of the field's Java type; null: no enum
  }

  private void compile() {
    try {
      JsonNode root = new ObjectMapper().readTree(spec);
      List<Field> list = new ArrayList<>();
      index = new HashMap<>();
      foldedNames = new HashSet<>();
      for (JsonNode node : root.get("fields")) {
        Field f = new Field();
        f.name = node.get("name").asText();
        switch (node.get("type").asText()) {
          case "string": f.type = STRING; break;
          case "integer": f.type = INTEGER; break;
          case "number": f.type = NUMBER; break;
          case "boolean": f.type = BOOLEAN; break;
          default: throw new IllegalArgumentException("field " + f.name + ": unsupported type " + node.get("type"));
        }
        f.required = node.path("required").asBoolean(false);
        f.minimum = number(node, "minimum");
        f.maximum = number(node, "maximum");
        f.exclusiveMinimum = number(node, "exclusiveMinimum");
        f.exclusiveMaximum = number(node, "exclusiveMaximum");
        f.minLength = node.hasNonNull("minLength") ? node.get("minLength").asInt() : null;
        f.maxLength = node.hasNonNull("maxLength") ? node.get("maxLength").asInt() : null;
        f.pattern = node.hasNonNull("pattern") ? Pattern.compile(node.get("pattern").asText()) : null;
        if (node.hasNonNull("enum")) {
          f.allowed = new HashSet<>();
          for (JsonNode option : node.get("enum")) {
            Object v = enumValue(f.type, option);
            if (v == null) {
              throw new IllegalArgumentException("field " + f.name + ": enum value " + option + " is not of the field's type");
            }
            f.allowed.add(v);
          }
        }
        index.put(f.name, list.size());
        foldedNames.add(f.name.toLowerCase(Locale.ROOT));
        list.add(f);
      }
      fields = list.toArray(new Field[0]);
      rejected = new Object[fields.length + 1];
      rejected[0] = Boolean.FALSE;
    } catch (IOException e) {
      throw new IllegalArgumentException("screen spec is not JSON: " + e.getMessage(), e);
    }
  }

  private static Double number(JsonNode node, String key) {
    return node.hasNonNull(key) ? node.get(key).asDouble() : null;
  }

  private static Object enumValue(int type, JsonNode option) {
    switch (type) {
      case STRING: return option.isTextual() ? option.asText() : null;
      case INTEGER: return option.canConvertToExactIntegral() && option.canConvertToLong() ? (Object) option.asLong() : null;
      case NUMBER: return option.isNumber() ? (Object) option.asDouble() : null;
      default: return option.isBoolean() ? (Object) option.asBoolean() : null;
    }
  }

  private Row reject() {
    return RowFactory.create(rejected.clone());
  }

  @Override
  public Row call(byte[] value) {
    if (fields == null) {
      compile(); // deserialised on an executor
    }
    if (value == null || value.length == 0 || value[0] != '{') {
      return reject();
    }
    Object[] out = new Object[fields.length + 1];
    try (JsonParser p = JSON.createParser(value)) {
      if (p.nextToken() != JsonToken.START_OBJECT) {
        return reject();
      }
      JsonToken t;
      while ((t = p.nextToken()) == JsonToken.FIELD_NAME) {
        String name = p.currentName();
        Integer at = index.get(name);
        JsonToken v = p.nextToken();
        if (at == null) {
          if (foldedNames.contains(name.toLowerCase(Locale.ROOT))) {
            return reject(); // a field name in another case: leave it to the SQL paths
          }
          p.skipChildren();
          continue;
        }
        int i = at;
        if (out[i + 1] != null) {
          return reject(); // a field given twice
        }
        Object typed = read(fields[i], p, v);
        if (typed == null || !holds(fields[i], typed)) {
          return reject();
        }
        out[i + 1] = typed;
      }
      if (t != JsonToken.END_OBJECT || p.nextToken() != null) {
        return reject(); // anything after the object
      }
    } catch (IOException | RuntimeException e) {
      return reject(); // malformed: the SQL paths give the reason
    }
    for (int i = 0; i < fields.length; i++) {
      if (fields[i].required && out[i + 1] == null) {
        return reject();
      }
    }
    out[0] = Boolean.TRUE;
    return RowFactory.create(out);
  }

  /** The token's value as the field's Java type, or null where the plain form does not apply. */
  private static Object read(Field f, JsonParser p, JsonToken v) throws IOException {
    switch (f.type) {
      case STRING:
        if (v != JsonToken.VALUE_STRING) return null;
        String s = p.getText();
        for (int k = 0; k < s.length(); k++) {
          if (Character.isSurrogate(s.charAt(k))) return null; // code points counted by the SQL paths
        }
        return s;
      case INTEGER:
        if (v != JsonToken.VALUE_NUMBER_INT) return null;
        JsonParser.NumberType nt = p.getNumberType();
        if (nt != JsonParser.NumberType.INT && nt != JsonParser.NumberType.LONG) return null;
        long l = p.getLongValue();
        return Math.abs((double) l) < EXACT_LONG ? (Object) l : null;
      case NUMBER:
        if (v == JsonToken.VALUE_NUMBER_INT) {
          JsonParser.NumberType it = p.getNumberType();
          if (it != JsonParser.NumberType.INT && it != JsonParser.NumberType.LONG) return null;
        } else if (v != JsonToken.VALUE_NUMBER_FLOAT) {
          return null;
        }
        double d = p.getDoubleValue() + 0.0; // -0.0 becomes 0.0, as on the SQL paths
        return Double.isFinite(d) ? (Object) d : null;
      default:
        if (v == JsonToken.VALUE_TRUE) return Boolean.TRUE;
        if (v == JsonToken.VALUE_FALSE) return Boolean.FALSE;
        return null;
    }
  }

  /** Every rule of the field holds for {@code typed}. */
  private static boolean holds(Field f, Object typed) {
    if (f.allowed != null && !f.allowed.contains(typed)) return false;
    if (f.type == STRING) {
      String s = (String) typed;
      if (f.minLength != null && s.length() < f.minLength) return false;
      if (f.maxLength != null && s.length() > f.maxLength) return false;
      if (f.pattern != null && !f.pattern.matcher(s).find()) return false;
      return true;
    }
    if (f.type == BOOLEAN) return true;
    double d = typed instanceof Long ? (double) (Long) typed : (Double) typed;
    if (f.minimum != null && d < f.minimum) return false;
    if (f.maximum != null && d > f.maximum) return false;
    if (f.exclusiveMinimum != null && d <= f.exclusiveMinimum) return false;
    if (f.exclusiveMaximum != null && d >= f.exclusiveMaximum) return false;
    return true;
  }
}
