package churnwatch.anchor;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.lang.management.ManagementFactory;
import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.time.Instant;
import java.time.OffsetDateTime;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Properties;
import java.util.UUID;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicReference;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.common.serialization.Deserializer;
import org.apache.kafka.common.serialization.Serde;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.serialization.Serializer;
import org.apache.kafka.common.utils.Bytes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Grouped;
import org.apache.kafka.streams.kstream.Materialized;
import org.apache.kafka.streams.state.KeyValueStore;

/**
 * The naive per-customer aggregate on Kafka Streams, an anchor of bench/pipeline.py.
 *
 * <p>One stream over the four input topics (keys: customer ids as bytes, values: JSON
 * events); every value is parsed with Jackson (occurred_at as RFC 3339, amount when
 * present), and per customer a KTable from {@code groupByKey().aggregate()} keeps the count
 * of events, the total spend and the last event time, in a persistent RocksDB store with its
 * changelog topic. Everything else is Kafka Streams' defaults: at_least_once, one stream
 * thread, the record cache (10 MB) and a commit every 30 s. A value that does not parse, or
 * has no key, counts as an event processed and updates nothing.
 *
 * <p>It stops after {@code --events N} records have gone through the parse step and prints
 * one JSON line: events, seconds (first event processed to the N-th), rate, startup (launch
 * to the first event: from {@code --launched-at}, epoch seconds, else the JVM's start),
 * customers (aggregates created), aggregated (events that updated one), rss (bytes, at the
 * N-th event) and close (seconds to shut down: the last commit, store flush and changelog
 * writes included).
 *
 * <pre>
 * java -cp 'target/anchor.jar:target/lib/*' churnwatch.anchor.Aggregate \
 *     --bootstrap 127.0.0.1:9092 --events 115000 --state-dir /tmp/ks [--topics a,b,c,d]
 * </pre>
 */
public final class Aggregate {
  static final List<String> INPUT_TOPICS =
      List.of(
          "customer.signups",
          "customer.purchases",
          "customer.cancellations",
          "customer.feedback");

  /** A customer's aggregate, and also one event's contribution to it (count 1). */
  record Agg(long count, double spend, long lastMicros) {}

  static final Serde<Agg> AGG_SERDE =
      Serdes.serdeFrom(
          (Serializer<Agg>)
              (topic, agg) ->
                  agg == null
                      ? null
                      : ByteBuffer.allocate(24)
                          .putLong(agg.count())
                          .putDouble(agg.spend())
                          .putLong(agg.lastMicros())
                          .array(),
          (Deserializer<Agg>)
              (topic, data) -> {
                if (data == null) {
                  return null;
                }
                ByteBuffer buffer = ByteBuffer.wrap(data);
                return new Agg(buffer.getLong(), buffer.getDouble(), buffer.getLong());
              });

  private static final ObjectMapper JSON = new ObjectMapper();

  private Aggregate() {}

  /** One event's contribution, or null when the value is not an event we can read. */
  static Agg parse(byte[] value) {
    if (value == null) {
      return null;
    }
    try {
      JsonNode event = JSON.readTree(value);
      if (event == null || !event.isObject()) {
        return null;
      }
      JsonNode at = event.get("occurred_at");
      if (at == null || !at.isTextual()) {
        return null;
      }
      Instant moment = OffsetDateTime.parse(at.textValue()).toInstant();
      long micros = moment.getEpochSecond() * 1_000_000L + moment.getNano() / 1_000;
      JsonNode amount = event.get("amount");
      double spend = amount == null ? 0.0 : amount.asDouble(0.0);
      return new Agg(1, spend, micros);
    } catch (IOException | RuntimeException e) {
      return null;
    }
  }

  static Map<String, String> options(String[] args) {
    Map<String, String> options = new HashMap<>();
    for (int i = 0; i < args.length; i += 2) {
      if (!args[i].startsWith("--") || i + 1 >= args.length) {
        throw new IllegalArgumentException("expected --name value pairs, got " + Arrays.toString(args));
      }
      options.put(args[i].substring(2), args[i + 1]);
    }
    for (String required : List.of("bootstrap", "events", "state-dir")) {
      if (!options.containsKey(required)) {
        throw new IllegalArgumentException("--" + required + " is required");
      }
    }
    return options;
  }

  static long rssBytes() {
    try {
      for (String line : Files.readAllLines(Path.of("/proc/self/status"))) {
        if (line.startsWith("VmRSS:")) {
          return 1024L * Long.parseLong(line.replaceAll("[^0-9]", ""));
        }
      }
    } catch (IOException | RuntimeException e) {
      // not Linux: no figure
    }
    return 0;
  }

  public static void main(String[] args) throws Exception {
    Map<String, String> options = options(args);
    long total = Long.parseLong(options.get("events"));
    double launchedAt =
        options.containsKey("launched-at")
            ? Double.parseDouble(options.get("launched-at"))
            : ManagementFactory.getRuntimeMXBean().getStartTime() / 1000.0;
    List<String> topics =
        options.containsKey("topics")
            ? List.of(options.get("topics").split(","))
            : INPUT_TOPICS;
    double timeout = Double.parseDouble(options.getOrDefault("timeout", "900"));

    Properties props = new Properties();
    props.put(
        StreamsConfig.APPLICATION_ID_CONFIG,
        options.getOrDefault("app-id", "churnwatch-anchor-ks-" + UUID.randomUUID()));
    props.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, options.get("bootstrap"));
    props.put(StreamsConfig.STATE_DIR_CONFIG, options.get("state-dir"));
    props.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, StreamsConfig.AT_LEAST_ONCE);
    props.put(StreamsConfig.consumerPrefix(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG), "earliest");

    AtomicLong seen = new AtomicLong();
    AtomicLong customers = new AtomicLong();
    AtomicLong aggregated = new AtomicLong();
    long[] marks = new long[2]; // nanoTime of the first and the N-th event
    double[] firstWall = new double[1];
    long[] rss = new long[1];
    CountDownLatch done = new CountDownLatch(1);

    StreamsBuilder builder = new StreamsBuilder();
    builder.stream(topics, Consumed.with(Serdes.Bytes(), Serdes.ByteArray()))
        .mapValues(Aggregate::parse)
        .peek(
            (key, event) -> {
              long n = seen.incrementAndGet();
              if (n == 1) {
                marks[0] = System.nanoTime();
                firstWall[0] = System.currentTimeMillis() / 1000.0;
              }
              if (n == total) {
                marks[1] = System.nanoTime();
                rss[0] = rssBytes();
                done.countDown();
              }
            })
        .filter((key, event) -> key != null && event != null)
        .groupByKey(Grouped.with(Serdes.Bytes(), AGG_SERDE))
        .aggregate(
            () -> {
              customers.incrementAndGet();
              return new Agg(0, 0.0, Long.MIN_VALUE);
            },
            (key, event, agg) -> {
              aggregated.incrementAndGet();
              return new Agg(
                  agg.count() + 1,
                  agg.spend() + event.spend(),
                  Math.max(agg.lastMicros(), event.lastMicros()));
            },
            Materialized.<Bytes, Agg, KeyValueStore<Bytes, byte[]>>as("customers")
                .withKeySerde(Serdes.Bytes())
                .withValueSerde(AGG_SERDE));

    AtomicReference<Throwable> failure = new AtomicReference<>();
    KafkaStreams streams = new KafkaStreams(builder.build(), props);
    streams.setUncaughtExceptionHandler(
        error -> {
          failure.set(error);
          done.countDown();
          return StreamsUncaughtExceptionHandler.StreamThreadExceptionResponse.SHUTDOWN_CLIENT;
        });
    streams.start();
    boolean finished = done.await((long) (timeout * 1000), TimeUnit.MILLISECONDS);
    long closing = System.nanoTime();
    streams.close(Duration.ofSeconds(60));
    double close = (System.nanoTime() - closing) / 1e9;
    if (failure.get() != null) {
      System.err.println("kafka streams failed: " + failure.get());
      failure.get().printStackTrace();
      System.exit(1);
    }
    if (!finished) {
      System.err.printf("timed out: %d of %d events after %.0f s%n", seen.get(), total, timeout);
      System.exit(2);
    }
    double seconds = Math.max((marks[1] - marks[0]) / 1e9, 1e-3);
    System.out.println(
        String.format(
            Locale.ROOT,
            "{\"events\": %d, \"seconds\": %.6f, \"rate\": %.1f, \"startup\": %.3f,"
                + " \"customers\": %d, \"aggregated\": %d, \"rss\": %d, \"close\": %.3f}",
            total,
            seconds,
            total / seconds,
            firstWall[0] - launchedAt,
            customers.get(),
            aggregated.get(),
            rss[0],
            close));
    System.out.flush();
  }
}
