package dev.tern.bench

import com.posthog.PostHog
import com.posthog.PostHogConfig
import com.posthog.PostHogInterface
import com.segment.analytics.kotlin.core.Analytics
import com.segment.analytics.kotlin.core.Configuration
import com.segment.analytics.kotlin.core.RequestFactory
import com.segment.analytics.kotlin.core.Telemetry
import dev.tern.HttpClient
import dev.tern.HttpRequest
import dev.tern.HttpResponse
import dev.tern.TernConfig
import dev.tern.TrackErrorReason
import dev.tern.Tracker
import dev.tern.UrlConnectionHttpClient
import java.io.File
import java.io.IOException
import java.net.HttpURLConnection
import java.net.URI
import java.nio.file.Path
import java.util.UUID
import java.util.concurrent.atomic.AtomicLong

/**
 * One SDK under test, with its backend on 127.0.0.1: [track] is the timed call; [delivered] and
 * [bodyBytes] are what the backend counted since the peer opened.
 */
interface Peer : AutoCloseable {
    /** `tern`, `segment` or `posthog`. */
    val name: String

    /** One track call with [Event]; never reads what the SDK returns. */
    fun track()

    /** Asks the SDK to upload everything it holds (Tern's waits until it is acknowledged). */
    fun flush()

    /** Events the backend accepted. */
    fun delivered(): Long

    /** Request body bytes of the uploads the backend answered, as sent (compressed). */
    fun bodyBytes(): Long

    /** Upload requests the backend answered. */
    fun uploads(): Long

    /** What the SDK says about the events it did not keep (read before [shutdown]). */
    fun notes(): Map<String, Long> = emptyMap()

    /** Stops the SDK (close or shutdown); the backend keeps counting. */
    fun shutdown()

    /** Stops the backend (a no-op for Tern: the script owns the collector). */
    override fun close()
}

/** Opens the peers by name. */
object Peers {
    val NAMES = listOf("tern", "segment", "posthog")

    /**
     * A new SDK instance with a fresh buffer under [dir]. Tern's backend is the collector at
     * [collector] (started by tools/bench-kotlin.sh); the others start their own server.
     */
    @JvmStatic
    fun open(name: String, collector: String, dir: Path): Peer = when (name) {
        "tern" -> TernPeer(collector, dir)
        "segment" -> SegmentPeer()
        "posthog" -> PostHogPeer(dir)
        else -> throw IllegalArgumentException("unknown peer $name (one of $NAMES)")
    }
}

/**
 * Tern through its public Kotlin API with the default policy and HTTP client. Delivered events
 * are the collector's `tern_collector_events_delivered_total` (events of acknowledged uploads;
 * the fault proxy behind it answers PutRecords without Kinesis), taken relative to its value at
 * start; the collector has no byte counter, so bytes are counted on the way out, around the
 * default client, for every request that got an answer.
 */
class TernPeer(private val collector: String, dir: Path) : Peer {
    override val name = "tern"
    private val client = CountingHttpClient(UrlConnectionHttpClient())
    private val base = deliveredTotal()
    // The default upload policy; the buffer's caps raised so that the whole run fits (the 10 s
    // flat-out burst is up to ~2.5 million events, ~1 GB of event JSON, tracked far faster than
    // one device uploads): with the default caps (100 000 events, 32 MiB) the buffer would drop
    // the oldest, reported as cap gaps.
    private val tracker = Tracker(
        TernConfig.Builder(dir.resolve("tern.db").toString(), collector, WRITE_KEY)
            .maxBufferEvents(5_000_000)
            .maxBufferBytes(4L shl 30)
            .httpClient(client)
            .build(),
    )

    override fun track() {
        tracker.track(Event.NAME, Event.PROPERTIES)
    }

    override fun flush() {
        tracker.flushAndWait(30_000)
    }

    override fun delivered(): Long = deliveredTotal() - base

    override fun bodyBytes(): Long = client.bytes.get()

    override fun uploads(): Long = client.requests.get()

    /**
     * `track_refused_dropped`: calls that found the hand-off queue full (refused on the calling
     * thread); `sdk_dropped_events`: every event the SDK dropped, by any reason, since the
     * install; `sdk_pending_events`: what still waits in the buffer.
     */
    override fun notes(): Map<String, Long> {
        val stats = tracker.pendingStats()
        return linkedMapOf(
            "track_refused_dropped" to (tracker.errorCounts()[TrackErrorReason.DROPPED] ?: 0L),
            "sdk_dropped_events" to stats.droppedEvents.toLong(),
            "sdk_pending_events" to stats.pendingEvents.toLong(),
        )
    }

    override fun shutdown() {
        tracker.close()
    }

    override fun close() {}

    private fun deliveredTotal(): Long {
        val text = URI("$collector/metrics").toURL().openStream().use { String(it.readAllBytes(), Charsets.UTF_8) }
        return text.lineSequence()
            .filter { it.startsWith("$DELIVERED ") || it.startsWith("$DELIVERED{") }
            .sumOf { it.substringAfterLast(' ').toDouble().toLong() }
    }

    /** Sums the request bodies of answered uploads. */
    private class CountingHttpClient(private val inner: HttpClient) : HttpClient {
        val bytes = AtomicLong()
        val requests = AtomicLong()

        override fun post(request: HttpRequest): HttpResponse {
            val response = inner.post(request)
            requests.incrementAndGet()
            bytes.addAndGet(request.body.size.toLong())
            return response
        }
    }

    companion object {
        /** The collector's --write-key in tools/bench-kotlin.sh. */
        const val WRITE_KEY = "bench"
        private const val DELIVERED = "tern_collector_events_delivered_total"
    }
}

/** A peer whose backend is a [CountingServer] in this JVM: delivery and bytes are the server's counts. */
abstract class LocalBackendPeer : Peer {
    protected abstract val server: CountingServer

    override fun delivered(): Long = server.events.get()

    override fun bodyBytes(): Long = server.bodyBytes.get()

    override fun uploads(): Long = server.requests.get()

    override fun close() {
        server.close()
    }
}

/**
 * Segment analytics-kotlin core, default configuration except where it must point: the CDN
 * (settings) and API hosts are the local server, reached over plain HTTP by a [RequestFactory]
 * that differs from Segment's only in the scheme, and its telemetry (which would report to
 * Segment's servers) is off. Its buffer is Segment's own: files under
 * /tmp/analytics-kotlin/<writeKey>, a fresh write key per instance, removed at [close].
 */
class SegmentPeer : LocalBackendPeer() {
    override val name = "segment"
    private val writeKey = "bench" + UUID.randomUUID().toString().replace("-", "")
    private val settingsServed = AtomicLong()
    override val server = CountingServer(
        batchPath = "/v1/b",
        batchKey = "batch",
        batchAnswer = """{"success":true}""",
        routes = mapOf(
            "/v1/projects/" to { _ ->
                settingsServed.incrementAndGet()
                settings()
            },
        ),
    )
    private val analytics: Analytics

    init {
        Telemetry.enable = false
        analytics = Analytics(
            Configuration(
                writeKey = writeKey,
                application = "tern-bench",
                apiHost = "${server.hostPort}/v1",
                cdnHost = "${server.hostPort}/v1",
                requestFactory = PlainHttpRequestFactory(),
            ),
        )
        // Until its settings arrive Segment keeps at most 1000 events (StartupQueue) and drops
        // the rest: start timing once it runs, as an app's steady state does.
        val deadline = System.nanoTime() + 10_000_000_000L
        while (settingsServed.get() == 0L && System.nanoTime() < deadline) Thread.sleep(20)
        Thread.sleep(1_000)
    }

    private fun settings(): String = """{"integrations":{"Segment.io":{"apiKey":"$writeKey","apiHost":"${server.hostPort}/v1",""" +
        """"unbundledIntegrations":[]}},"plan":{"track":{"__default":{"enabled":true}}},"edgeFunction":{},""" +
        """"middlewareSettings":{}}"""

    override fun track() {
        analytics.track(Event.NAME, Event.SEGMENT_PROPERTIES)
    }

    override fun flush() {
        analytics.flush()
    }

    override fun shutdown() {
        analytics.shutdown()
        File("/tmp/analytics-kotlin/$writeKey").deleteRecursively()
    }

    /** Segment's RequestFactory with http:// for https:// (same client, headers and gzip). */
    private class PlainHttpRequestFactory : RequestFactory() {
        override fun settings(cdnHost: String, writeKey: String): HttpURLConnection {
            val connection = openConnection("http://$cdnHost/projects/$writeKey/settings")
            connection.setRequestProperty("Content-Type", "application/json; charset=utf-8")
            if (connection.responseCode != HttpURLConnection.HTTP_OK) {
                connection.disconnect()
                throw IOException("HTTP ${connection.responseCode}")
            }
            return connection
        }

        override fun upload(apiHost: String): HttpURLConnection {
            val connection = openConnection("http://$apiHost/b")
            connection.setRequestProperty("Content-Type", "text/plain")
            connection.setRequestProperty("Content-Encoding", "gzip")
            connection.doOutput = true
            connection.setChunkedStreamingMode(0)
            return connection
        }
    }
}

/**
 * PostHog's JVM core (`com.posthog:posthog`), default configuration except: the host is the
 * local server, events are buffered under [dir] (the JVM core keeps no event without a
 * `storagePrefix`), and feature flags and remote config are not loaded (no flag is evaluated).
 * The server answers `/batch` with `{"status":1}` and anything else with `{}`.
 */
class PostHogPeer(dir: Path) : LocalBackendPeer() {
    override val name = "posthog"
    override val server = CountingServer(
        batchPath = "/batch",
        batchKey = "batch",
        batchAnswer = """{"status":1}""",
        routes = mapOf("/" to { _ -> "{}" }),
    )
    private val posthog: PostHogInterface = PostHog.with(
        PostHogConfig(
            apiKey = "phc_bench" + UUID.randomUUID().toString().replace("-", ""),
            host = "http://${server.hostPort}",
        ).apply {
            storagePrefix = dir.resolve("posthog").toString()
            remoteConfig = false
            preloadFeatureFlags = false
            sendFeatureFlagEvent = false
        },
    )

    override fun track() {
        posthog.capture(Event.NAME, properties = Event.PROPERTIES)
    }

    override fun flush() {
        posthog.flush()
    }

    override fun shutdown() {
        posthog.close()
    }
}
