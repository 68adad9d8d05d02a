package dev.tern.bench;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Comparator;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;
import org.openjdk.jmh.annotations.Benchmark;
import org.openjdk.jmh.annotations.BenchmarkMode;
import org.openjdk.jmh.annotations.Level;
import org.openjdk.jmh.annotations.Mode;
import org.openjdk.jmh.annotations.OutputTimeUnit;
import org.openjdk.jmh.annotations.Param;
import org.openjdk.jmh.annotations.Scope;
import org.openjdk.jmh.annotations.Setup;
import org.openjdk.jmh.annotations.State;
import org.openjdk.jmh.annotations.TearDown;

/**
 * JMH SampleTime over one track call of each peer (in Java: JMH's annotation processor runs in
 * javac, not in the Kotlin compiler). BenchMain runs it one peer per fork; the Tern peer talks to
 * the collector named by the system property {@code tern.bench.collector}.
 */
@State(Scope.Benchmark)
@BenchmarkMode(Mode.SampleTime)
@OutputTimeUnit(TimeUnit.NANOSECONDS)
public class TrackBench {
    @Param({"tern", "segment", "posthog"})
    public String peer;

    private Peer sdk;
    private Path dir;

    @Setup(Level.Trial)
    public void open() throws IOException {
        // Under BenchMain's own temporary directory when it runs us: it removes that at the end,
        // also what PostHog's executor still writes after close.
        String base = System.getProperty("tern.bench.tmp");
        dir = base == null
            ? Files.createTempDirectory("tern-jmh-" + peer)
            : Files.createTempDirectory(Path.of(base), "tern-jmh-" + peer);
        sdk = Peers.open(peer, System.getProperty("tern.bench.collector", "http://127.0.0.1:9"), dir);
    }

    @Benchmark
    public void track() {
        sdk.track();
    }

    @TearDown(Level.Trial)
    public void close() throws IOException {
        // JMH calls flat out for its whole fork (14 s) and counts no deliveries: say what the
        // peer did not keep, so that a drop here is seen (PeerRun counts the loss of its runs).
        java.util.Map<String, Long> notes = sdk.notes();
        if (!notes.isEmpty()) {
            System.err.println("JMH fork of " + peer + ": " + notes);
        }
        sdk.shutdown();
        sdk.close();
        try (Stream<Path> files = Files.walk(dir)) {
            files.sorted(Comparator.reverseOrder()).forEach(p -> p.toFile().delete());
        }
    }
}
