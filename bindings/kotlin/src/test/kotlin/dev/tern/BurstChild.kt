package dev.tern

/** Eight properties, as the benchmarks and the burst tests track them. */
internal fun burstProperties(i: Int): Map<String, Any?> = mapOf(
    "i" to i,
    "screen" to "checkout",
    "sku" to "sku-${i % 97}",
    "price" to 19.99,
    "quantity" to i % 5,
    "in_stock" to (i % 3 != 0),
    "currency" to "EUR",
    "campaign" to null,
)

/**
 * The host app killed by the SIGKILL test (TrackerTest): tracks steadily (one event per
 * millisecond), then a burst as fast as it can, printing `tracked <i> <System.nanoTime()>` after
 * every 50th event. Halfway through the burst it calls `flush()`, which returns once everything
 * tracked so far is durable, and prints `durable <i> <what flush returned>`; then it tracks the
 * burst's second half, prints `burst done` and waits to be killed.
 * Arguments: the buffer's path, the collector's URL, the write key, steady events, burst events.
 */
object BurstChild {
    @JvmStatic
    fun main(args: Array<String>) {
        val (db, endpoint, key) = args
        val steady = args[3].toInt()
        val burst = args[4].toInt()
        val tracker = Tracker(TernConfig.Builder(db, endpoint, key).maxBufferEvents(1_000_000).build())
        val out = System.out
        for (i in 0 until steady + burst) {
            tracker.track("killed", burstProperties(i))
            if (i % 50 == 49) {
                out.println("tracked $i ${System.nanoTime()}")
                out.flush()
            }
            if (i < steady) Thread.sleep(1)
            if (i == steady + burst / 2 - 1) {
                out.println("durable $i ${tracker.flush(60_000)}")
                out.flush()
            }
        }
        out.println("burst done")
        out.flush()
        Thread.sleep(120_000)
    }
}
