package dev.tern

import dev.tern.internal.ApiException
import org.json.JSONArray
import org.json.JSONObject
import org.junit.jupiter.api.AfterEach
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertNull
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.BeforeEach
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.assertThrows
import org.junit.jupiter.api.io.TempDir
import java.io.File
import java.net.URI
import java.net.http.HttpClient
import java.net.http.HttpRequest
import java.net.http.HttpResponse
import java.nio.file.Path
import java.time.ZoneOffset
import java.time.ZonedDateTime
import java.time.format.DateTimeFormatter
import java.util.Base64
import java.util.UUID

/** Kotlin → Rust SDK → real tern-collector → kinesalite, read back with GetRecords. */
class TrackerTest {
    private val root = File(System.getProperty("tern.repo.root")).canonicalFile
    private val http = HttpClient.newHttpClient()
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
        val request = HttpRequest.newBuilder(URI(kinesis))
            .header("Content-Type", "application/x-amz-json-1.1")
            .header("X-Amz-Target", "Kinesis_20131202.$target")
            .header("X-Amz-Date", date)
            .header("Authorization", "AWS4-HMAC-SHA256 Credential=test/20261124/us-east-1/kinesis/aws4_request, SignedHeaders=host, Signature=0")
            .POST(HttpRequest.BodyPublishers.ofString(body.toString()))
            .build()
        val response = http.send(request, HttpResponse.BodyHandlers.ofString())
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
}
