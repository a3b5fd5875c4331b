package io.streamsight.jvm;

import com.fasterxml.jackson.core.JsonFactory;
import com.fasterxml.jackson.core.JsonParser;
import com.fasterxml.jackson.core.JsonToken;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.math.BigDecimal;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.regex.Pattern;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.RowFactory;
import org.apache.spark.sql.api.java.UDF1;

/**
 * The stream's screen of a message value against a contract's payload rules, in one pass of
 * Jackson's streaming parser (a Spark SQL UDF, registered per contract by
 * {@code streaming_jobs.jvm.screen_function}; {@code streaming_jobs.transforms.screen} uses it).
 *
 * <p>It accepts exactly what the exact validation path of {@code transforms.py} (Spark's VARIANT:
 * {@code try_parse_json}, {@code schema_of_variant}, {@code try_variant_get}) accepts, with the same
 * values, and says nothing about why a value is rejected: the exact path gives the reason for those.
 * What that means, as measured on Spark 4.3 (and checked by {@code tests/unit/test_transforms.py}):
 * leading spaces are allowed, anything after the object is ignored; a key given twice counts with
 * its last value; JSON null is an absent field; an integer may be written as a decimal without a
 * fraction ({@code 12.0}, not {@code 1.2e1}) and must fit a bigint; a decimal-form number has no
 * negative zero; a lone surrogate anywhere makes the value malformed; text that is not UTF-8 is
 * read as Spark casts it (replacement characters). The event time is converted in SQL from the
 * string (or number) returned here, so timestamp parsing stays Spark's.
 *
 * <p>Result: a row {@code (_ok, field_1, ..., field_n)} in the contract's field order; the fields
 * are null unless {@code _ok}.
 */
public final class ContractScreen implements UDF1<byte[], Row> {
  private static final long serialVersionUID = 1L;
  private static final JsonFactory JSON = new JsonFactory();

  private static final int STRING = 0, INTEGER = 1, NUMBER = 2, BOOLEAN = 3;

  private final String spec;
  private transient Field[] fields;
  private transient Map<String, Integer> index;
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
    String minimum, maximum, exclusiveMinimum, exclusiveMaximum; // as the SQL literals (Python repr)
    Integer minLength, maxLength;
    Pattern pattern;
    Set<Object> allowed; // enum, as values of the field's Java type; null: no enum
  }

  private void compile() {
    try {
      JsonNode root = new ObjectMapper().readTree(spec);
      List<Field> list = new ArrayList<>();
      index = new HashMap<>();
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
        list.add(f);
      }
      rejected = new Object[list.size() + 1];
      rejected[0] = Boolean.FALSE;
      fields = list.toArray(new Field[0]); // last: call() compiles while it is null
    } catch (IOException e) {
      throw new IllegalArgumentException("screen spec is not JSON: " + e.getMessage(), e);
    }
  }

  private static String number(JsonNode node, String key) {
    if (!node.hasNonNull(key)) return null;
    String text = node.get(key).asText();
    new BigDecimal(text); // fails here on a bad bound
    return text;
  }

  private static Object enumValue(int type, JsonNode option) {
    switch (type) {
      case STRING: return option.isTextual() ? option.asText() : null;
      case INTEGER: return option.canConvertToExactIntegral() && option.canConvertToLong() ? (Object) option.asLong() : null;
      case NUMBER: return option.isNumber() ? (Object) option.asDouble() : null; // compared with ==
      default: return option.isBoolean() ? (Object) option.asBoolean() : null;
    }
  }

  private Row reject() {
    return RowFactory.create(rejected.clone());
  }

  /** A field's value in a form the exact path does not accept (wrong type, fraction, too big). */
  private static final Object BAD = new Object();

  /** Thrown where the exact path finds the whole value malformed. */
  private static final class Malformed extends Exception {
    private static final long serialVersionUID = 1L;
    Malformed() {
      super(null, null, false, false);
    }
  }

  @Override
  public Row call(byte[] value) {
    if (fields == null) {
      compile(); // deserialised on an executor
    }
    if (value == null) {
      return reject();
    }
    int first = 0;
    while (first < value.length && value[first] == ' ') {
      first++; // ltrim: spaces only
    }
    if (first == value.length || value[first] != '{') {
      return reject();
    }
    boolean ascii = true;
    boolean escapedSurrogate = false;
    for (int k = 0; k < value.length; k++) {
      byte b = value[k];
      if (b < 0) {
        ascii = false;
      } else if (b == '\\' && k + 3 < value.length && value[k + 1] == 'u'
          && (value[k + 2] == 'd' || value[k + 2] == 'D') && "89abcdefABCDEF".indexOf(value[k + 3]) >= 0) {
        escapedSurrogate = true;
      }
    }
    boolean checkStrings = escapedSurrogate || !ascii;
    Object[] got = new Object[fields.length];
    try (JsonParser p = ascii ? JSON.createParser(value) : JSON.createParser(new String(value, StandardCharsets.UTF_8))) {
      if (p.nextToken() != JsonToken.START_OBJECT) {
        return reject();
      }
      JsonToken t;
      while ((t = p.nextToken()) == JsonToken.FIELD_NAME) {
        String name = p.currentName();
        if (checkStrings) {
          checkText(name);
        }
        Integer at = index.get(name);
        JsonToken v = p.nextToken();
        if (at == null) {
          skip(p, v, checkStrings);
          continue;
        }
        int i = at;
        got[i] = v == JsonToken.VALUE_NULL ? null : read(fields[i], p, v, checkStrings); // the last one counts
      }
      if (t != JsonToken.END_OBJECT) {
        return reject();
      }
    } catch (IOException | RuntimeException | Malformed e) {
      return reject(); // malformed: the exact path gives the reason
    }
    Object[] out = new Object[fields.length + 1];
    for (int i = 0; i < fields.length; i++) {
      Object typed = got[i];
      if (typed == BAD || (typed == null && fields[i].required) || (typed != null && !holds(fields[i], typed))) {
        return reject();
      }
      out[i + 1] = typed;
    }
    out[0] = Boolean.TRUE;
    return RowFactory.create(out);
  }

  private static void checkText(String s) throws Malformed {
    for (int k = 0; k < s.length(); k++) {
      char c = s.charAt(k);
      if (Character.isHighSurrogate(c)) {
        if (k + 1 < s.length() && Character.isLowSurrogate(s.charAt(k + 1))) {
          k++;
        } else {
          throw new Malformed();
        }
      } else if (Character.isLowSurrogate(c)) {
        throw new Malformed();
      }
    }
  }

  /** Past the value starting at token {@code v}, checking its strings when asked. */
  private static void skip(JsonParser p, JsonToken v, boolean checkStrings) throws IOException, Malformed {
    if (!checkStrings) {
      p.skipChildren();
      return;
    }
    if (v == JsonToken.VALUE_STRING) {
      checkText(p.getText());
    }
    if (v != JsonToken.START_OBJECT && v != JsonToken.START_ARRAY) {
      return;
    }
    int depth = 1;
    while (depth > 0) {
      JsonToken t = p.nextToken();
      if (t == null) {
        throw new Malformed();
      }
      if (t == JsonToken.START_OBJECT || t == JsonToken.START_ARRAY) {
        depth++;
      } else if (t == JsonToken.END_OBJECT || t == JsonToken.END_ARRAY) {
        depth--;
      } else if (t == JsonToken.FIELD_NAME || t == JsonToken.VALUE_STRING) {
        checkText(p.getText());
      }
    }
  }

  /** Digits, '-' and '.' only: the text VARIANT reads as a decimal (if it fits 38 digits). */
  private static BigDecimal asDecimal(String text) {
    for (int k = 0; k < text.length(); k++) {
      char c = text.charAt(k);
      if (c != '-' && c != '.' && (c < '0' || c > '9')) return null;
    }
    BigDecimal d = new BigDecimal(text);
    return d.scale() <= 38 && d.precision() <= 38 ? d : null;
  }

  /** The token's value as the field's Java type, or {@link #BAD}. */
  private static Object read(Field f, JsonParser p, JsonToken v, boolean checkStrings) throws IOException, Malformed {
    switch (f.type) {
      case STRING:
        if (v != JsonToken.VALUE_STRING) break;
        String s = p.getText();
        if (checkStrings) checkText(s);
        return s;
      case INTEGER:
        if (v == JsonToken.VALUE_NUMBER_INT) {
          JsonParser.NumberType nt = p.getNumberType();
          return nt == JsonParser.NumberType.INT || nt == JsonParser.NumberType.LONG ? (Object) p.getLongValue() : BAD;
        }
        if (v != JsonToken.VALUE_NUMBER_FLOAT) break;
        BigDecimal d = asDecimal(p.getText()); // 12.0 is an integer; 1.2e1 and 12.5 are not
        if (d == null || d.stripTrailingZeros().scale() > 0) return BAD;
        try {
          return d.longValueExact();
        } catch (ArithmeticException e) {
          return BAD; // does not fit a bigint
        }
      case NUMBER:
        if (v != JsonToken.VALUE_NUMBER_INT && v != JsonToken.VALUE_NUMBER_FLOAT) break;
        double x = p.getDoubleValue();
        if (v == JsonToken.VALUE_NUMBER_FLOAT && asDecimal(p.getText()) != null) {
          x += 0.0; // a VARIANT decimal: no negative zero
        }
        return Double.isFinite(x) ? (Object) x : BAD;
      default:
        if (v == JsonToken.VALUE_TRUE) return Boolean.TRUE;
        if (v == JsonToken.VALUE_FALSE) return Boolean.FALSE;
        break;
    }
    skip(p, v, checkStrings);
    return BAD;
  }

  /** Every rule of the field holds for {@code typed}. */
  private static boolean holds(Field f, Object typed) {
    if (f.type == STRING) {
      String s = (String) typed;
      if (f.allowed != null && !f.allowed.contains(s)) return false;
      int length = s.codePointCount(0, s.length());
      if (f.minLength != null && length < f.minLength) return false;
      if (f.maxLength != null && length > f.maxLength) return false;
      return f.pattern == null || f.pattern.matcher(s).find();
    }
    if (f.type == BOOLEAN) return f.allowed == null || f.allowed.contains(typed);
    if (f.type == INTEGER) {
      long l = (Long) typed;
      if (f.allowed != null && !f.allowed.contains(l)) return false;
      BigDecimal d = BigDecimal.valueOf(l); // bigint against a decimal literal: exact
      return below(f.minimum, d, true) && above(f.maximum, d, true)
          && below(f.exclusiveMinimum, d, false) && above(f.exclusiveMaximum, d, false);
    }
    double x = (Double) typed; // double against a literal: as doubles
    if (f.allowed != null) {
      boolean found = false;
      for (Object option : f.allowed) found |= (Double) option == x;
      if (!found) return false;
    }
    if (f.minimum != null && x < Double.parseDouble(f.minimum)) return false;
    if (f.maximum != null && x > Double.parseDouble(f.maximum)) return false;
    if (f.exclusiveMinimum != null && x <= Double.parseDouble(f.exclusiveMinimum)) return false;
    return f.exclusiveMaximum == null || x < Double.parseDouble(f.exclusiveMaximum);
  }

  /** {@code d} is at least (or, not inclusive, more than) {@code bound}; true without a bound. */
  private static boolean below(String bound, BigDecimal d, boolean inclusive) {
    if (bound == null) return true;
    int c = new BigDecimal(bound).compareTo(d);
    return inclusive ? c <= 0 : c < 0;
  }

  /** {@code d} is at most (or, not inclusive, less than) {@code bound}; true without a bound. */
  private static boolean above(String bound, BigDecimal d, boolean inclusive) {
    if (bound == null) return true;
    int c = new BigDecimal(bound).compareTo(d);
    return inclusive ? c >= 0 : c > 0;
  }
}
