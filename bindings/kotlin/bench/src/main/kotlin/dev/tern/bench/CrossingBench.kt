package dev.tern.bench

import dev.tern.Call
import dev.tern.CallWriter
import dev.tern.MonotonicClock
import dev.tern.UrlConnectionHttpClient
import dev.tern.internal.Tracker
import dev.tern.internal.TrackerConfig
import dev.tern.internal.defaultUploadPolicy
import java.nio.file.Files

/**
 * `CrossingBench`: what one crossing into the library costs per event, by how many events it
 * carries. The per-event path is uniffi's `track(name, json)` over JNA (what `Tracker.track()`
 * called before the hand-off queue); the batched path is `trackMany` with 1 to 1 000 encoded
 * calls. Both include the SDK's own `track()` work (validation, id, hand-off to its writer),
 * whose cost is the floor a large batch approaches. Not timed: a flush after each slice, so the
 * SDK's writer never fills its queue. Endpoint unreachable: buffering only.
 */
object CrossingBench {
    private const val EVENTS_PER_SLICE = 2_000
    private const val SLICES = 15

    @JvmStatic
    fun main(args: Array<String>) {
        val dir = Files.createTempDirectory("tern-crossing")
        val policy = defaultUploadPolicy().copy(maxBufferEvents = 10_000_000uL, maxBufferBytes = 1uL shl 32)
        val tracker = Tracker(
            TrackerConfig(dir.resolve("crossing.db").toString(), "http://127.0.0.1:9", "bench", policy,
                null, null, null, null, null, null, null, null, null),
            UrlConnectionHttpClient(),
        )
        val json = StringBuilder().also { sb ->
            sb.append('{')
            Event.PROPERTIES.entries.forEachIndexed { i, (k, v) ->
                if (i > 0) sb.append(',')
                sb.append('"').append(k).append("\":")
                if (v is String) sb.append('"').append(v).append('"') else sb.append(v)
            }
            sb.append('}')
        }.toString()
        val rows = mutableListOf<Pair<String, Double>>()
        val flush = { tracker.flush(30_000uL); Unit }
        rows += "track(name, json), one event per crossing" to median(flush) {
            repeat(EVENTS_PER_SLICE) { tracker.track(Event.NAME, json) }
        }
        for (perCrossing in listOf(1, 10, 100, 1_000)) {
            val w = CallWriter()
            repeat(perCrossing) {
                w.u8(Call.TRACK)
                w.i64(System.currentTimeMillis())
                w.i64(MonotonicClock.nanos())
                w.str(Event.NAME)
                w.json(Event.PROPERTIES)
            }
            val calls = w.bytes.copyOf(w.size)
            rows += "trackMany, $perCrossing per crossing" to median(flush) {
                repeat(EVENTS_PER_SLICE / perCrossing) { tracker.trackMany(calls, MonotonicClock.nanos(), 0uL) }
            }
        }
        println("ns per event, median of $SLICES slices of $EVENTS_PER_SLICE events (JVM, release library):")
        for ((what, ns) in rows) println("  %-45s %8.0f".format(what, ns))
        tracker.shutdown()
        dir.toFile().deleteRecursively()
    }

    /** Runs [slice] SLICES + 5 times, [between] untimed after each; the median ns per event. */
    private fun median(between: () -> Unit, slice: () -> Unit): Double {
        val perEvent = DoubleArray(SLICES + 5)
        for (i in perEvent.indices) {
            val start = System.nanoTime()
            slice()
            perEvent[i] = (System.nanoTime() - start).toDouble() / EVENTS_PER_SLICE
            between()
        }
        // The first five slices warm the JIT up.
        return perEvent.drop(5).sorted()[SLICES / 2]
    }
}
