package dev.tern

import com.sun.net.httpserver.HttpServer
import dev.tern.internal.ApiException
import org.json.JSONArray
import org.json.JSONObject
import org.junit.jupiter.api.AfterEach
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertFalse
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
        val ids = mutableSetOf<String>()
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
                ids += tracker.track("kotlin_event", properties) ?: error("tracked")
            }
            assertTrue(tracker.flushAndWait(30_000), "delivered")
            assertEquals(0uL, tracker.pendingStats().pendingEvents)
        }
        val records = readStream()
        assertEquals(ids, records.map { it.getString("event_id") }.toSet(), "every event is in the stream")
        val first = records.first { it.getLong("seq") == 1L }
        assertEquals("kotlin-user", first.getString("user_id"))
        assertEquals("Android", first.getJSONObject("context").getJSONObject("os").getString("name"))
        val p = first.getJSONObject("properties")
        assertEquals(JSONArray(listOf<Any>("a", "b\"quoted\"", 3)).toString(), p.getJSONArray("tags").toString())
        assertTrue(p.isNull("missing"))
        assertEquals(2.5, p.getJSONObject("nested").getJSONObject("deep").getJSONArray("list").getDouble(1))
    }

    @Test
    fun badInputThrowsAndNeverCrashes(@TempDir dir: Path) {
        Tracker(dir.resolve("bad.db").toString(), "http://127.0.0.1:9", key).use { tracker ->
            assertThrows<ApiException.InvalidInput> { tracker.track("has spaces") }
            assertThrows<ApiException.Unavailable> { Tracker(dir.resolve("bad.db").toString(), "http://127.0.0.1:9", key) }
            tracker.setOptOut(true)
            assertNull(tracker.track("ignored"))
        }
    }

    @Test
    fun closeReleasesTheBufferAtOnce(@TempDir dir: Path) {
        val db = dir.resolve("reopen.db").toString()
        val first = Tracker(db, "http://127.0.0.1:9", key)
        first.track("before_close")
        assertTrue(first.flush())
        first.close()
        // The Kotlin object lives until the garbage collector runs; its buffer does not.
        assertThrows<ApiException.Closed> { first.track("after_close") }
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
        val ids = mutableSetOf<String>()
        Tracker(dir.resolve("throwing.db").toString(), collector, key, realtime = true, httpClient = buggy).use { tracker ->
            repeat(20) { ids += tracker.track("kotlin_retry", mapOf("i" to it)) ?: error("tracked") }
            assertFalse(tracker.flushAndWait(1_500), "nothing can be delivered")
            assertTrue(failedCalls.get() >= 1, "the client was called")
            assertEquals(20uL, tracker.pendingStats().pendingEvents, "the batch is kept")
            // The kept batch is retried (after its backoff) and delivered.
            fixed.set(true)
            assertTrue(tracker.flushAndWait(30_000), "delivered")
        }
        assertEquals(ids, readStream().map { it.getString("event_id") }.toSet(), "every event is in the stream")
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
