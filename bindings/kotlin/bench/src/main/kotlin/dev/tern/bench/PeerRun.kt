package dev.tern.bench

import kotlinx.serialization.json.JsonObject
import kotlinx.serialization.json.JsonPrimitive
import java.nio.file.Files
import java.nio.file.Path
import kotlin.concurrent.thread

/**
 * One peer in a JVM of its own (BenchMain starts it): `PeerRun PEER COLLECTOR DIR` prints one
 * JSON line.
 *
 * 1. Latency: [WARMUP] calls, then [MEASURED] calls each timed with System.nanoTime into a
 *    preallocated array (p50, p99, p99.9, max on the calling thread).
 * 2. Delivery: wait while the SDK uploads by its own policy (until no event came for
 *    [POLICY_IDLE_NS]), then flush once and wait until the backend has every event, or none came
 *    for [FLUSH_IDLE_NS], or [DRAIN_CAP_NS] passed; then the SDK is shut down and counted again.
 *    delivered = counted by the backend, lost = calls − delivered, wire bytes per event = request
 *    body bytes / delivered.
 * 3. Throughput: a fresh instance, calls flat out on one thread for [FLAT_OUT_NS].
 */
object PeerRun {
    const val WARMUP = 50_000
    const val MEASURED = 200_000
    private const val FLAT_OUT_NS = 10_000_000_000L
    private const val POLICY_IDLE_NS = 5_000_000_000L
    private const val FLUSH_IDLE_NS = 15_000_000_000L
    private const val DRAIN_CAP_NS = 180_000_000_000L

    @JvmStatic
    fun main(args: Array<String>) {
        require(args.size == 3) { "usage: PeerRun PEER COLLECTOR DIR" }
        val (name, collector, dirArg) = args
        val dir = Path.of(dirArg)
        val out = linkedMapOf<String, Any>("peer" to name)

        // -Dtern.bench.flatOnly=true: only step 3 (for quick A/B runs of the throughput).
        if (!java.lang.Boolean.getBoolean("tern.bench.flatOnly")) {
            val peer = Peers.open(name, collector, Files.createDirectories(dir.resolve("latency")))
            repeat(WARMUP) { peer.track() }
            val latencies = LongArray(MEASURED)
            val start = System.nanoTime()
            for (i in 0 until MEASURED) {
                val t0 = System.nanoTime()
                peer.track()
                latencies[i] = System.nanoTime() - t0
            }
            val elapsed = System.nanoTime() - start
            latencies.sort()
            out["calls_timed"] = MEASURED
            out["p50_ns"] = percentile(latencies, 0.50)
            out["p99_ns"] = percentile(latencies, 0.99)
            out["p999_ns"] = percentile(latencies, 0.999)
            out["max_ns"] = latencies.last()
            out["mean_ns"] = latencies.average().toLong()
            out["timed_loop_calls_per_s"] = (MEASURED * 1e9 / elapsed).toLong()

            val called = (WARMUP + MEASURED).toLong()
            val drainStart = System.nanoTime()
            // First the SDK's own policy (upload every N events or T seconds) while it makes
            // progress, then one flush for the rest. Flushing early would change what is measured:
            // PostHog's flush() waits behind every capture still queued on its executor and holds
            // back its uploads meanwhile, so its 1000-file queue overflows.
            waitForDelivery(peer, called, drainStart, POLICY_IDLE_NS)
            peer.flush()
            waitForDelivery(peer, called, drainStart, FLUSH_IDLE_NS)
            out.putAll(peer.notes())
            peer.shutdown()
            Thread.sleep(1_000)
            val delivered = peer.delivered()
            val bytes = peer.bodyBytes()
            out["uploads"] = peer.uploads()
            peer.close()
            out["called"] = called
            out["delivered"] = delivered
            out["lost"] = called - delivered
            out["drain_s"] = Math.round((System.nanoTime() - drainStart) / 1e8) / 10.0
            out["wire_bytes"] = bytes
            out["wire_bytes_per_event"] = if (delivered > 0) Math.round(bytes * 10.0 / delivered) / 10.0 else 0.0
        }

        val flat = Peers.open(name, collector, Files.createDirectories(dir.resolve("throughput")))
        var calls = 0L
        val flatStart = System.nanoTime()
        val end = flatStart + FLAT_OUT_NS
        while (true) {
            repeat(256) { flat.track() }
            calls += 256
            if (System.nanoTime() >= end) break
        }
        val flatElapsed = System.nanoTime() - flatStart
        out["flat_out_calls"] = calls
        out["flat_out_calls_per_s"] = (calls * 1e9 / flatElapsed).toLong()
        // Then what reached the backend of that burst, as for the timed calls: the SDK's own
        // policy while it makes progress, one flush, and what came.
        val flatDrain = System.nanoTime()
        waitForDelivery(flat, calls, flatDrain, POLICY_IDLE_NS)
        flat.flush()
        waitForDelivery(flat, calls, flatDrain, FLUSH_IDLE_NS)
        out.putAll(flat.notes().mapKeys { "flat_out_${it.key}" })
        val flatDelivered = flat.delivered()
        out["flat_out_delivered"] = flatDelivered
        out["flat_out_lost"] = calls - flatDelivered
        out["flat_out_drain_s"] = Math.round((System.nanoTime() - flatDrain) / 1e8) / 10.0
        val stopper = thread(isDaemon = true) {
            runCatching { flat.shutdown() }
            runCatching { flat.close() }
        }
        stopper.join(10_000)

        println(JsonObject(out.mapValues { (_, v) -> if (v is String) JsonPrimitive(v) else JsonPrimitive(v as Number) }))
        System.out.flush()
        Runtime.getRuntime().halt(0)
    }

    /** Polls [peer]'s backend until it has [called] events, or none came for [idleNs]. */
    private fun waitForDelivery(peer: Peer, called: Long, start: Long, idleNs: Long) {
        var last = peer.delivered()
        var lastProgress = System.nanoTime()
        while (last < called) {
            Thread.sleep(500)
            val delivered = peer.delivered()
            val now = System.nanoTime()
            if (delivered != last) {
                last = delivered
                lastProgress = now
            }
            if (now - lastProgress > idleNs || now - start > DRAIN_CAP_NS) return
        }
    }

    /** Nearest-rank percentile of sorted values. */
    fun percentile(sorted: LongArray, q: Double): Long =
        sorted[(Math.ceil(q * sorted.size).toInt() - 1).coerceIn(0, sorted.size - 1)]
}
