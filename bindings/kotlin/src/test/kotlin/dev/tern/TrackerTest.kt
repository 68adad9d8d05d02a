package dev.tern

import com.sun.net.httpserver.HttpServer
import dev.tern.internal.ApiException
import org.json.JSONArray
import org.json.JSONObject
import org.junit.jupiter.api.AfterEach
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertFalse
import org.junit.jupiter.api.Assertions.assertNotNull
import org.junit.jupiter.api.Assertions.assertNull
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.BeforeEach
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.assertThrows
import org.junit.jupiter.api.io.TempDir
import org.junit.jupiter.params.ParameterizedTest
import org.junit.jupiter.params.provider.ValueSource
import java.io.File
import java.net.InetSocketAddress
import java.net.URI
import java.nio.file.Path
import java.time.ZoneOffset
import java.time.ZonedDateTime
import java.time.format.DateTimeFormatter
import java.util.Base64
import java.util.UUID
import java.util.concurrent.LinkedBlockingQueue
import java.util.concurrent.TimeUnit
import java.util.concurrent.atomic.AtomicBoolean
import java.util.concurrent.atomic.AtomicInteger
import java.util.logging.Handler
import java.util.logging.LogRecord
import java.util.logging.Logger
import kotlin.time.Duration.Companion.hours
import kotlin.time.Duration.Companion.minutes
import java.net.http.HttpClient as JdkHttpClient
import java.net.http.HttpRequest as JdkHttpRequest
import java.net.http.HttpResponse as JdkHttpResponse

/**
 * Kotlin → Rust SDK → UrlConnectionHttpClient → real tern-collector → kinesalite, read back with
 * GetRecords.
 */
class TrackerTest {
    private val root = File(System.getProperty("tern.repo.root")).canonicalFile
    private val http = JdkHttpClient.newHttpClient()
    private val processes = mutableListOf<Process>()
    private lateinit var kinesis: String
    private lateinit var collector: String
    private val stream = "kotlin-" + UUID.randomUUID().toString().replace("-", "")
    private val key = "kotlin-test-key"

    private fun start(vararg command: String, env: Map<String, String> = emptyMap()): String {
        val builder = ProcessBuilder(*command).directory(root).redirectError(ProcessBuilder.Redirect.DISCARD)
        builder.environment().putAll(env)
        val process = builder.start()
        processes += process
        val line = process.inputStream.bufferedReader().readLine() ?: error("${command[0]} printed nothing")
        require(line.startsWith("listening on ")) { "${command[0]} printed $line" }
        return "http://" + line.removePrefix("listening on ")
    }

    private fun call(target: String, body: JSONObject): JSONObject {
        val date = ZonedDateTime.now(ZoneOffset.UTC).format(DateTimeFormatter.ofPattern("yyyyMMdd'T'HHmmss'Z'"))
        val request = JdkHttpRequest.newBuilder(URI(kinesis))
            .header("Content-Type", "application/x-amz-json-1.1")
            .header("X-Amz-Target", "Kinesis_20131202.$target")
            .header("X-Amz-Date", date)
            .header("Authorization", "AWS4-HMAC-SHA256 Credential=test/20261124/us-east-1/kinesis/aws4_request, SignedHeaders=host, Signature=0")
            .POST(JdkHttpRequest.BodyPublishers.ofString(body.toString()))
            .build()
        val response = http.send(request, JdkHttpResponse.BodyHandlers.ofString())
        require(response.statusCode() == 200) { "$target: ${response.statusCode()} ${response.body()}" }
        return if (response.body().isBlank()) JSONObject() else JSONObject(response.body())
    }

    @BeforeEach
    fun startPipeline() {
        kinesis = start("node", "tools/kinesalite.js", "0")
        call("CreateStream", JSONObject().put("StreamName", stream).put("ShardCount", 1))
        while (call("DescribeStreamSummary", JSONObject().put("StreamName", stream))
                .getJSONObject("StreamDescriptionSummary").getString("StreamStatus") != "ACTIVE") {
            Thread.sleep(50)
        }
        collector = start(
            File(root, "target/debug/tern-collector").path,
            "--listen", "127.0.0.1:0", "--stream", stream, "--kinesis-endpoint", kinesis,
            "--write-key", key, "--app-id", "kotlin-app",
            env = mapOf("AWS_ACCESS_KEY_ID" to "local", "AWS_SECRET_ACCESS_KEY" to "local", "TERN_LOG" to "error"),
        )
    }

    @AfterEach
    fun stopPipeline() {
        processes.forEach { it.destroyForcibly().waitFor() }
    }

    private fun readStream(): List<JSONObject> {
        val shard = call("ListShards", JSONObject().put("StreamName", stream))
            .getJSONArray("Shards").getJSONObject(0).getString("ShardId")
        var iterator: String? = call(
            "GetShardIterator",
            JSONObject().put("StreamName", stream).put("ShardId", shard).put("ShardIteratorType", "TRIM_HORIZON"),
        ).getString("ShardIterator")
        val out = mutableListOf<JSONObject>()
        while (iterator != null) {
            val page = call("GetRecords", JSONObject().put("ShardIterator", iterator).put("Limit", 10000))
            val records = page.getJSONArray("Records")
            if (records.length() == 0) break
            for (i in 0 until records.length()) {
                val data = Base64.getDecoder().decode(records.getJSONObject(i).getString("Data"))
                out += JSONObject(String(data, Charsets.UTF_8))
            }
            iterator = page.optString("NextShardIterator", null)
        }
        return out
    }

    @Test
    fun eventsTrackedFromKotlinAreReadBackFromTheStream(@TempDir dir: Path) {
        Tracker(dir.resolve("kotlin.db").toString(), collector, key, osName = "Android", appVersion = "3.1").use { tracker ->
            tracker.identify("kotlin-user")
            for (i in 0 until 150) {
                val properties = mapOf(
                    "i" to i,
                    "price" to 9.99,
                    "flag" to (i % 2 == 0),
                    "missing" to null,
                    "tags" to listOf<Any>("a", "b\"quoted\"", 3),
                    "nested" to mapOf("deep" to mapOf("list" to arrayOf<Any>(1L, 2.5f))),
                )
                tracker.track("kotlin_event", properties)
            }
            assertTrue(tracker.flushAndWait(30_000), "delivered")
            assertEquals(0uL, tracker.pendingStats().pendingEvents)
        }
        val records = readStream()
        assertEquals((0 until 150).toSet(), records.map { it.getJSONObject("properties").getInt("i") }.toSet(), "every event is in the stream")
        assertEquals(150, records.map { it.getString("event_id") }.toSet().size, "each with its own id")
        val first = records.first { it.getLong("seq") == 1L }
        assertEquals("kotlin-user", first.getString("user_id"))
        assertEquals("Android", first.getJSONObject("context").getJSONObject("os").getString("name"))
        val p = first.getJSONObject("properties")
        assertEquals(JSONArray(listOf<Any>("a", "b\"quoted\"", 3)).toString(), p.getJSONArray("tags").toString())
        assertTrue(p.isNull("missing"))
        assertEquals(2.5, p.getJSONObject("nested").getJSONObject("deep").getJSONArray("list").getDouble(1))
    }

    @Test
    fun badInputNeverThrowsAndNeverCrashes(@TempDir dir: Path) {
        Tracker(dir.resolve("bad.db").toString(), "http://127.0.0.1:9", key).use { tracker ->
            tracker.track("has spaces")
            tracker.flush() // the SDK's checks run when the queue is handed over
            assertEquals(1L, tracker.errorCounts()[TrackErrorReason.INVALID_EVENT])
            // Only the constructor throws: a second tracker on the same file is refused cleanly.
            assertThrows<ApiException.Unavailable> { Tracker(dir.resolve("bad.db").toString(), "http://127.0.0.1:9", key) }
            tracker.setOptOut(true)
            tracker.track("ignored")
            assertTrue(tracker.flush())
            assertEquals(0uL, tracker.pendingStats().pendingEvents, "an opted-out user's events are not kept")
            assertEquals(1L, tracker.errorCounts().values.sum(), "and they are no error")
        }
    }

    /** Captures what the `dev.tern` logger writes. */
    private class Captured : Handler() {
        val records = java.util.concurrent.CopyOnWriteArrayList<LogRecord>()
        override fun publish(record: LogRecord) {
            records += record
        }
        override fun flush() {}
        override fun close() {}
    }

    private fun <T> capturingLog(block: (Captured) -> T): T {
        val logger = Logger.getLogger("dev.tern")
        val captured = Captured()
        logger.addHandler(captured)
        try {
            return block(captured)
        } finally {
            logger.removeHandler(captured)
        }
    }

    @Test
    fun anInvalidEventReturnsNormallyAndTheListenerHearsWhy(@TempDir dir: Path): Unit = capturingLog { log ->
        val heard = mutableListOf<TrackError>()
        val config = TernConfig.Builder(dir.resolve("listener.db").toString(), "http://127.0.0.1:9", key)
            .errorListener { heard += it }
            .build()
        Tracker(config).use { tracker ->
            tracker.track("has spaces", mapOf("i" to 1))
            tracker.track("1starts_with_a_digit")
            tracker.track("ok", mapOf("big" to "x".repeat(70 * 1024)))
            tracker.flush()
            assertEquals(List(3) { TrackErrorReason.INVALID_EVENT }, heard.map { it.reason })
            assertEquals(listOf("has spaces", "1starts_with_a_digit", "ok"), heard.map { it.eventName })
            assertTrue(heard[0].message.contains("event name"), heard[0].message)
            assertTrue(heard[2].message.contains("properties"), heard[2].message)
            assertTrue(heard[0].cause is ApiException.InvalidInput)
            assertEquals(3L, tracker.errorCounts()[TrackErrorReason.INVALID_EVENT])
            assertEquals(1, log.records.size, "logged once per reason, not per call")
            assertFalse(log.records[0].message.contains("x".repeat(100)), "the log carries no payload")
            // The tracker goes on taking valid events.
            tracker.track("valid_event")
            assertTrue(tracker.flush())
            assertEquals(3, heard.size)
            assertEquals(1uL, tracker.pendingStats().pendingEvents)
            tracker.close()
            // After close: no exception either, the listener hears why.
            tracker.track("after_close")
            assertEquals(TrackErrorReason.CLOSED, heard.last().reason)
            assertFalse(tracker.flush())
            tracker.setSuperProperties(mapOf("a" to 1))
            tracker.setOptOut(true)
            assertEquals(4L, tracker.errorCounts()[TrackErrorReason.CLOSED])
            assertEquals(2, log.records.size, "one line for invalid_event, one for closed")
        }
    }

    @Test
    fun strictThrowsAfterTellingTheListener(@TempDir dir: Path) {
        val heard = mutableListOf<TrackError>()
        val config = TernConfig.Builder(dir.resolve("strict.db").toString(), "http://127.0.0.1:9", key)
            .strict()
            .errorListener { heard += it }
            .build()
        Tracker(config).use { tracker ->
            assertThrows<ApiException.InvalidInput> { tracker.track("has spaces") }
            assertEquals(listOf(TrackErrorReason.INVALID_EVENT), heard.map { it.reason })
            tracker.track("valid_event")
            assertEquals(1, heard.size, "a valid event is taken")
            assertTrue(tracker.flush())
            assertEquals(1uL, tracker.pendingStats().pendingEvents)
        }
    }

    @Test
    fun aListenerThatThrowsDoesNotBreakTrack(@TempDir dir: Path): Unit = capturingLog { log ->
        val calls = AtomicInteger()
        Tracker(dir.resolve("throwing-listener.db").toString(), "http://127.0.0.1:9", key).use { tracker ->
            tracker.setErrorListener {
                calls.incrementAndGet()
                throw IllegalStateException("a bug in the app's listener")
            }
            tracker.track("has spaces")
            tracker.track("has spaces")
            tracker.flush()
            assertEquals(2, calls.get(), "the listener was called each time")
            assertTrue(log.records.any { it.thrown is IllegalStateException }, "its exception was logged")
            tracker.track("valid_event")
            // Removing the listener: errors are still counted.
            tracker.setErrorListener(null)
            tracker.track("has spaces")
            tracker.flush()
            assertEquals(2, calls.get())
            assertEquals(3L, tracker.errorCounts()[TrackErrorReason.INVALID_EVENT])
        }
    }

    @Test
    fun theBuildersSettingsReachTheSdk(@TempDir dir: Path) {
        val config = TernConfig.Builder(dir.resolve("builder.db").toString(), "http://127.0.0.1:9", key)
            .maxBufferEvents(5)
            .flushInterval(1.hours)
            .build()
        assertEquals(5uL, config.policy.maxBufferEvents)
        assertEquals(3_600_000uL, config.policy.flushIntervalMs)
        assertEquals(100u, config.policy.flushAtCount, "untouched settings keep the SDK's defaults")
        Tracker(config).use { tracker ->
            repeat(8) { tracker.track("capped", mapOf("i" to it)) }
            assertTrue(tracker.flush())
            // The cap of 5 applied: the 3 oldest were dropped (and counted).
            assertEquals(5uL, tracker.pendingStats().pendingEvents)
            assertEquals(3uL, tracker.pendingStats().droppedEvents)
        }
        val realtime = TernConfig.Builder("unused.db", "http://127.0.0.1:9", key).realtime().build().policy
        assertEquals(1u, realtime.flushAtCount)
        assertEquals(500uL, realtime.flushIntervalMs)
    }

    @Test
    fun anOutOfRangeSettingIsRefusedAtBuild() {
        val builder = { TernConfig.Builder("unused.db", "http://127.0.0.1:9", key) }
        val tooLarge = assertThrows<IllegalArgumentException> { builder().maxBatchEvents(501).build() }
        assertTrue(tooLarge.message!!.contains("max_batch_events"), tooLarge.message)
        val zero = assertThrows<IllegalArgumentException> { builder().flushAtCount(0).build() }
        assertTrue(zero.message!!.contains("flush_at_count"), zero.message)
        val negative = assertThrows<IllegalArgumentException> { builder().maxBufferEvents(-1).build() }
        assertTrue(negative.message!!.contains("maxBufferEvents"), negative.message)
        assertThrows<IllegalArgumentException> {
            builder().retryMinDelay(10.minutes).retryMaxDelay(1.minutes).build()
        }
        builder().maxBatchEvents(500).build()
    }

    @Test
    fun closeReleasesTheBufferAtOnce(@TempDir dir: Path) {
        val db = dir.resolve("reopen.db").toString()
        val first = Tracker(db, "http://127.0.0.1:9", key)
        first.track("before_close")
        assertTrue(first.flush())
        first.close()
        // The Kotlin object lives until the garbage collector runs; its buffer does not.
        first.track("after_close")
        assertEquals(1L, first.errorCounts()[TrackErrorReason.CLOSED])
        assertEquals(1UL, first.pendingStats().pendingEvents)
        Tracker(db, "http://127.0.0.1:9", key).use { second ->
            assertEquals(first.installId, second.installId)
            assertEquals(1UL, second.pendingStats().pendingEvents)
        }
    }

    @Test
    fun aClientThatThrowsCrashesNothingAndLosesNothing(@TempDir dir: Path) {
        val failedCalls = AtomicInteger()
        val fixed = AtomicBoolean(false)
        // An app's client with a bug (it throws what the HttpClient contract does not allow)
        // until it is fixed; then it is the default client.
        val buggy = object : HttpClient {
            private val inner = UrlConnectionHttpClient()
            override fun post(request: HttpRequest): HttpResponse {
                if (fixed.get()) return inner.post(request)
                failedCalls.incrementAndGet()
                throw IllegalStateException("a bug in the app's HTTP client")
            }
        }
        Tracker(dir.resolve("throwing.db").toString(), collector, key, realtime = true, httpClient = buggy).use { tracker ->
            repeat(20) { tracker.track("kotlin_retry", mapOf("i" to it)) }
            tracker.flush()
            assertFalse(tracker.flushAndWait(1_500), "nothing can be delivered")
            assertTrue(failedCalls.get() >= 1, "the client was called")
            assertEquals(20uL, tracker.pendingStats().pendingEvents, "the batch is kept")
            // The kept batch is retried (after its backoff) and delivered.
            fixed.set(true)
            assertTrue(tracker.flushAndWait(30_000), "delivered")
        }
        assertEquals((0 until 20).toSet(), readStream().map { it.getJSONObject("properties").getInt("i") }.toSet(), "every event is in the stream")
    }

    @Test
    fun aBurstThatFillsTheQueueLosesNothingThroughFlushOrClose(@TempDir dir: Path) {
        val db = dir.resolve("burst.db").toString()
        val burst = 10_000 // about 2.5 MB of calls: a 64 KiB hand-off queue fills over and over
        val config = {
            // A full queue makes the calls wait, here long enough that a thread stalled by a busy
            // test machine cannot turn the wait into a drop (the drop path has its own test).
            TernConfig.Builder(db, collector, key).maxBufferEvents(1_000_000)
                .handoffQueueBytes(64 * 1024).handoffMaxBlockMs(30_000).build()
        }
        Tracker(config()).use { tracker ->
            for (i in 0 until burst) {
                if (i == burst / 2) tracker.identify("burst-user")
                tracker.track("burst", burstProperties(i))
            }
            assertTrue(tracker.flushAndWait(120_000), "delivered after flush")
            for (i in burst until 2 * burst) tracker.track("burst", burstProperties(i))
            assertTrue(tracker.queueFullWaits() > 0, "the queue filled")
            assertEquals(0L, tracker.errorCounts().values.sum(), "nothing dropped or refused")
            // No flush: close() hands the queue over before it stops.
        }
        Tracker(config()).use { assertTrue(it.flushAndWait(120_000), "delivered after a restart") }
        val records = readStream()
        val byIndex = records.groupBy { it.getJSONObject("properties").getInt("i") }
        assertEquals((0 until 2 * burst).toSet(), byIndex.keys, "every event is in the stream")
        for ((i, copies) in byIndex) {
            val user = copies.first().optString("user_id", "")
            assertEquals(if (i < burst / 2) "" else "burst-user", user, "event $i has the user of its time")
        }
    }

    @Test
    fun aQueueThatStaysFullDropsAndTheStreamReportsTheDropAsAGap(@TempDir dir: Path) {
        val heard = mutableListOf<TrackError>()
        val config = TernConfig.Builder(dir.resolve("full.db").toString(), collector, key)
            .handoffQueueBytes(1024) // about 6 events
            .errorListener { heard += it }
            .build()
        Tracker(config).use { tracker ->
            tracker.holdingHandOff { repeat(12) { tracker.track("crowded", burstProperties(it)) } }
            val dropped = heard.count { it.reason == TrackErrorReason.DROPPED }
            assertTrue(dropped in 1..11, "some fit, the rest waited 100 ms each and were dropped ($dropped)")
            assertEquals(dropped.toLong(), tracker.errorCounts()[TrackErrorReason.DROPPED])
            assertTrue(tracker.flushAndWait(30_000))
            assertEquals(dropped.toULong(), tracker.pendingStats().droppedEvents)
            // The gap is cut into the next batch: one more event carries it if none waits.
            tracker.track("after")
            assertTrue(tracker.flushAndWait(30_000))
            val records = readStream()
            val gaps = records.filter { it.optString("kind") == "gap" }
            assertEquals(listOf("queue_full"), gaps.map { it.getString("reason") }.distinct())
            assertEquals(dropped, gaps.sumOf { it.getInt("count") }, "the stream reports every drop")
            val events = records.filter { !it.has("kind") }
            assertEquals(12 - dropped + 1, events.size)
            // received + reported = issued: every seq is an event or inside a gap.
            val covered = events.map { it.getLong("seq") }.toMutableSet()
            for (gap in gaps) {
                val ranges = gap.getJSONArray("ranges")
                for (r in 0 until ranges.length()) {
                    val range = ranges.getJSONObject(r)
                    covered += range.getLong("first")..range.getLong("last")
                }
            }
            assertEquals((1L..13L).toSet(), covered)
        }
    }

    /**
     * SIGKILL right after a burst faster than the SDK stores. No timing is asserted (the machine
     * running the test may stall at any moment): what must hold is what `flush()` promised, and
     * that events become durable in the order they were tracked. How long before the kill the
     * youngest survivor was tracked is printed, as a measurement.
     */
    @Test
    fun aKilledHostKeepsWhatFlushCalledDurableAndStoresInTrackingOrder(@TempDir dir: Path) {
        val db = dir.resolve("killed.db").toString()
        val java = File(System.getProperty("java.home"), "bin/java").path
        val child = ProcessBuilder(
            java, "-cp", System.getProperty("java.class.path"),
            "-Djna.library.path=" + System.getProperty("jna.library.path"),
            "dev.tern.BurstChild", db, "http://127.0.0.1:9", key, "1000", "5000",
        ).redirectError(ProcessBuilder.Redirect.DISCARD).start()
        processes += child
        val tracked = mutableListOf<Pair<Int, Long>>() // every 50th index and when its track() returned
        var durableThrough = -1
        child.inputStream.bufferedReader().use { lines ->
            while (true) {
                val line = lines.readLine() ?: error("the child ended before its burst was done")
                if (line == "burst done") break
                val (what, i, value) = line.split(" ")
                when (what) {
                    "tracked" -> tracked += i.toInt() to value.toLong()
                    "durable" -> {
                        assertEquals("true", value, "flush() in the child reached durability")
                        durableThrough = i.toInt()
                    }
                    else -> error("the child printed $line")
                }
            }
        }
        val killedAt = System.nanoTime()
        child.destroyForcibly() // SIGKILL
        child.waitFor()
        assertTrue(durableThrough >= 0, "the child flushed halfway through its burst")
        Tracker(db, collector, key).use { assertTrue(it.flushAndWait(120_000), "the survivors are delivered") }

        val records = readStream()
        val seqOf = records.filter { !it.has("kind") }
            .associate { it.getJSONObject("properties").getInt("i") to it.getLong("seq") }
        // Events dropped on a full hand-off queue are numbered in their place and reported as a
        // queue_full gap: missing, but never silently.
        val reportedDropped = records.filter { it.optString("kind") == "gap" && it.getString("reason") == "queue_full" }
            .associateBy { it.getString("gap_id") }.values.sumOf { it.getInt("count") }
        val lastSurvivor = seqOf.keys.max()
        assertTrue(lastSurvivor >= durableThrough, "what flush() called durable survived ($lastSurvivor < $durableThrough)")
        val missing = (0..lastSurvivor).filter { it !in seqOf }
        assertTrue(
            missing.size <= reportedDropped,
            "${missing.size} events tracked before the last survivor are missing and $reportedDropped were " +
                "reported dropped; the first missing: ${missing.take(10)}",
        )
        val outOfOrder = seqOf.entries.sortedBy { it.key }.zipWithNext().filter { (a, b) -> a.value >= b.value }
        assertEquals(emptyList<Any>(), outOfOrder.take(5), "seq follows the order of the track() calls")

        val ageMs = { at: Long -> TimeUnit.NANOSECONDS.toMillis(killedAt - at) }
        val youngestKept = tracked.filter { it.first in seqOf }.minOfOrNull { ageMs(it.second) }
        val oldestLost = tracked.filter { it.first !in seqOf }.maxOfOrNull { ageMs(it.second) }
        println(
            "SIGKILL after a burst: ${seqOf.size} of ${tracked.last().first + 1} events survived, " +
                "${durableThrough + 1} flushed before the kill; $reportedDropped reported dropped; " +
                "the youngest kept was tracked $youngestKept ms before the kill, the oldest lost $oldestLost ms",
        )
    }

    @ParameterizedTest
    @ValueSource(ints = [302, 307])
    fun aRedirectIsNotFollowedAndTheBatchIsKept(status: Int, @TempDir dir: Path) {
        val posts = AtomicInteger()
        val followed = AtomicInteger()
        val server = HttpServer.create(InetSocketAddress("127.0.0.1", 0), 0)
        val elsewhere = "http://127.0.0.1:${server.address.port}/elsewhere"
        server.createContext("/v1/batch") { exchange ->
            exchange.requestBody.readAllBytes()
            posts.incrementAndGet()
            exchange.responseHeaders.add("Location", elsewhere)
            exchange.sendResponseHeaders(status, -1)
            exchange.close()
        }
        // Following the redirect would land here, and a 200 from here must never count.
        server.createContext("/elsewhere") { exchange ->
            exchange.requestBody.readAllBytes()
            followed.incrementAndGet()
            exchange.sendResponseHeaders(200, -1)
            exchange.close()
        }
        server.start()
        try {
            val answers = LinkedBlockingQueue<HttpResponse>()
            val observed = object : HttpClient {
                private val inner = UrlConnectionHttpClient()
                override fun post(request: HttpRequest): HttpResponse = inner.post(request).also { answers.add(it) }
            }
            val url = "http://127.0.0.1:${server.address.port}"
            Tracker(dir.resolve("redirect.db").toString(), url, key, realtime = true, httpClient = observed).use { tracker ->
                repeat(5) { tracker.track("kotlin_redirect", mapOf("i" to it)) }
                val answer = answers.poll(10, TimeUnit.SECONDS) ?: error("no upload attempt")
                assertEquals(status.toUShort(), answer.status, "the redirect is the answer")
                assertEquals(elsewhere, answer.location)
                assertFalse(tracker.flushAndWait(1_000), "nothing can be delivered")
                assertTrue(posts.get() >= 1)
                assertEquals(0, followed.get(), "the redirect was not followed")
                assertEquals(5uL, tracker.pendingStats().pendingEvents, "the batch is kept")
            }
        } finally {
            server.stop(0)
        }
    }
}
