package dev.tern

import dev.tern.internal.ApiException
import dev.tern.internal.PendingStats
import dev.tern.internal.TrackerConfig
import dev.tern.internal.TransportException
import java.io.ByteArrayOutputStream
import java.io.IOException
import java.io.InputStream
import java.net.HttpURLConnection
import java.net.URI
import java.util.concurrent.atomic.AtomicLong
import java.util.logging.Level
import java.util.logging.Logger
import kotlin.time.Duration
import dev.tern.internal.Tracker as FfiTracker

/**
 * Errors from the SDK (invalid input, dropped event, unavailable tracker, closed): thrown by the
 * [Tracker] constructor, and by the other calls only when the config is strict.
 */
typealias TernException = ApiException

/** What waits in the buffer; see [Tracker.pendingStats]. */
typealias TernStats = PendingStats

/**
 * Performs the uploads' HTTP requests, on the SDK's uploader thread (never the main thread).
 * [UrlConnectionHttpClient] by default; implement it to pin certificates or use the app's own
 * HTTP stack. The contract: POST exactly the request's headers and body, never follow a
 * redirect, honour `timeoutMs`, return every HTTP answer (3xx, 4xx and 5xx included) with its
 * `Retry-After`, and throw [TransportException.Network] only when no answer came. Any other
 * exception counts as a network error too: the batch is kept and retried.
 */
typealias HttpClient = dev.tern.internal.HttpClient

/** One POST of an upload attempt; see [HttpClient]. */
typealias HttpRequest = dev.tern.internal.HttpRequest

/** The HTTP answer, whatever its status; see [HttpClient]. */
typealias HttpResponse = dev.tern.internal.HttpResponse

/** When to upload and what the buffer keeps; see [TernConfig.Builder]. */
typealias UploadPolicy = dev.tern.internal.UploadPolicy

/**
 * Why a call did not take what it was given, as an [ErrorListener] sees it. Each reason is
 * logged once per tracker (the first time), then only counted: see [Tracker.errorCounts].
 */
enum class TrackErrorReason(
    /** The reason as a stable string, for the app's own logs and metrics. */
    val code: String,
) {
    /** A bad event name, properties over the limits (64 KiB, 16 levels) or not encodable. */
    INVALID_EVENT("invalid_event"),

    /**
     * The event was dropped: the hand-off queue was full or the disk is failing. The SDK
     * counts it too ([Tracker.pendingStats]' `droppedEvents`) and reports it to the collector.
     */
    DROPPED("dropped"),

    /** The call came after [Tracker.close]. */
    CLOSED("closed"),

    /** Anything else: an unexpected failure inside the SDK, worth reporting as a bug. */
    INTERNAL("internal"),
}

/** What an [ErrorListener] receives: which call, why, and the SDK's message. */
class TrackError(
    /** Why, as one of a few reasons. */
    val reason: TrackErrorReason,
    /** The call that failed: `track`, `setSuperProperties`, `setOptOut`, `flush`, ... */
    val call: String,
    /** The event's name, for `track`. */
    val eventName: String?,
    /** The SDK's explanation (never the event's properties). */
    val message: String,
    /** The exception the SDK raised. */
    val cause: Throwable,
) {
    override fun toString(): String = "TrackError(${reason.code}, $call${eventName?.let { " $it" } ?: ""}: $message)"
}

/**
 * Hears about every event a call did not take. It runs on the thread that made the call (often
 * the main thread): keep it short, hand heavy work elsewhere. An exception it throws is caught
 * and logged; it never reaches the caller.
 */
fun interface ErrorListener {
    /** Called once per refused call. */
    fun onError(error: TrackError)
}

/**
 * Everything a [Tracker] starts with; build one with [TernConfig.Builder]:
 *
 * ```
 * val config = TernConfig.Builder(dbPath, endpoint, writeKey)
 *     .flushInterval(5.seconds)
 *     .flushAtCount(20)
 *     .maxBufferEvents(50_000)
 *     .errorListener { error -> Log.w("Analytics", error.toString()) }
 *     .build()
 * val tracker = Tracker(config)
 * ```
 */
class TernConfig private constructor(
    /** Path of the SQLite buffer (in the app's private files). */
    val dbPath: String,
    /** The collector's base URL. */
    val endpoint: String,
    /** The app's write key. */
    val writeKey: String,
    /** When to upload and what the buffer keeps (checked against the SDK's limits). */
    val policy: UploadPolicy,
    /** Whether [Tracker.track] and the other calls throw instead of reporting to the listener. */
    val strict: Boolean,
    /** Hears about every refused call; null for none. */
    val errorListener: ErrorListener?,
    /** Performs the uploads' HTTP requests. */
    val httpClient: HttpClient,
    internal val context: List<String?>,
) {
    /**
     * Builds a [TernConfig]. Every setting starts at the SDK's default (`sdk/src/policy.rs`);
     * [build] refuses a value out of the SDK's limits with an [IllegalArgumentException] that
     * names the setting.
     */
    class Builder(
        private val dbPath: String,
        private val endpoint: String,
        private val writeKey: String,
    ) {
        private var policy: UploadPolicy = dev.tern.internal.defaultUploadPolicy()
        private var strict = false
        private var errorListener: ErrorListener? = null
        private var httpClient: HttpClient? = null
        private var app = arrayOfNulls<String>(3)
        private var os = arrayOfNulls<String>(2)
        private var device = arrayOfNulls<String>(2)
        private var locale: String? = null
        private var timezone: String? = null
        private val problems = mutableListOf<String>()

        /**
         * The realtime preset: upload at every event and every 500 ms (events readable in
         * under 2 s) instead of every 10 s or 100 events. Later [flushInterval] and
         * [flushAtCount] calls override it.
         */
        fun realtime() = apply {
            val preset = dev.tern.internal.realtimeUploadPolicy()
            policy = policy.copy(flushIntervalMs = preset.flushIntervalMs, flushAtCount = preset.flushAtCount)
        }

        /** Upload what waits at least this often (default 10 s). */
        fun flushInterval(interval: Duration) = apply { policy = policy.copy(flushIntervalMs = millisOf("flushInterval", interval)) }

        /** Upload as soon as this many events wait (default 100). */
        fun flushAtCount(count: Int) = apply { policy = policy.copy(flushAtCount = nonNegative("flushAtCount", count).toUInt()) }

        /** Most events in one batch (default 250, at most 500). */
        fun maxBatchEvents(count: Int) = apply { policy = policy.copy(maxBatchEvents = nonNegative("maxBatchEvents", count).toUInt()) }

        /** Most uncompressed bytes of events in one batch (default 512 KiB, at most 5 MiB). */
        fun maxBatchBytes(bytes: Long) = apply { policy = policy.copy(maxBatchBytes = nonNegative("maxBatchBytes", bytes)) }

        /** Most compressed bytes of one upload (default 512 KiB, at most 1 MiB). */
        fun maxBatchCompressedBytes(bytes: Long) = apply {
            policy = policy.copy(maxBatchCompressedBytes = nonNegative("maxBatchCompressedBytes", bytes))
        }

        /** Most events the buffer keeps; the oldest beyond are dropped and reported (default 100 000). */
        fun maxBufferEvents(count: Long) = apply { policy = policy.copy(maxBufferEvents = nonNegative("maxBufferEvents", count)) }

        /** Most bytes of event JSON the buffer keeps (default 32 MiB). */
        fun maxBufferBytes(bytes: Long) = apply { policy = policy.copy(maxBufferBytes = nonNegative("maxBufferBytes", bytes)) }

        /** Oldest event the buffer keeps (default 30 days). */
        fun maxEventAge(age: Duration) = apply { policy = policy.copy(maxEventAgeMs = millisOf("maxEventAge", age)) }

        /** Most refused batches kept in quarantine (default 50; 0 keeps none). */
        fun maxQuarantineBatches(count: Long) = apply {
            policy = policy.copy(maxQuarantineBatches = nonNegative("maxQuarantineBatches", count))
        }

        /** Most bytes of event JSON kept in quarantine (default 4 MiB; 0 keeps none). */
        fun maxQuarantineBytes(bytes: Long) = apply { policy = policy.copy(maxQuarantineBytes = nonNegative("maxQuarantineBytes", bytes)) }

        /** First retry delay after a failed upload, before jitter (default 1 s). */
        fun retryMinDelay(delay: Duration) = apply { policy = policy.copy(retryMinDelayMs = millisOf("retryMinDelay", delay)) }

        /** Longest retry delay (default 5 minutes). */
        fun retryMaxDelay(delay: Duration) = apply { policy = policy.copy(retryMaxDelayMs = millisOf("retryMaxDelay", delay)) }
        /** Longest retry delay after attempts that got no answer (offline; default 60 s). */
        fun maxConnectivityRetryDelay(delay: Duration) = apply {
            policy = policy.copy(maxConnectivityRetryDelayMs = millisOf("maxConnectivityRetryDelay", delay))
        }

        /** A session ends after this long without an event (default 30 minutes). */
        fun sessionTimeout(timeout: Duration) = apply { policy = policy.copy(sessionTimeoutMs = millisOf("sessionTimeout", timeout)) }

        /**
         * Throw from [Tracker.track] and the other calls instead of only reporting (for tests
         * and debug builds). The listener still hears every error first.
         */
        fun strict(strict: Boolean = true) = apply { this.strict = strict }

        /** Hears about every refused call (see [ErrorListener]); also settable later. */
        fun errorListener(listener: ErrorListener?) = apply { errorListener = listener }

        /** Performs the uploads' HTTP requests ([UrlConnectionHttpClient] by default). */
        fun httpClient(client: HttpClient) = apply { httpClient = client }

        /** The app's id (package name), version and build. */
        fun app(id: String?, version: String? = null, build: String? = null) = apply { app = arrayOf(id, version, build) }

        /** The OS's name and version. */
        fun os(name: String?, version: String? = null) = apply { os = arrayOf(name, version) }

        /** The device's manufacturer and model. */
        fun device(manufacturer: String?, model: String? = null) = apply { device = arrayOf(manufacturer, model) }

        /** The locale (BCP 47). */
        fun locale(locale: String?) = apply { this.locale = locale }

        /** The time zone (IANA). */
        fun timezone(timezone: String?) = apply { this.timezone = timezone }

        /** The config; throws [IllegalArgumentException] naming the first setting out of range. */
        fun build(): TernConfig {
            problems.firstOrNull()?.let { throw IllegalArgumentException(it) }
            try {
                dev.tern.internal.checkUploadPolicy(policy)
            } catch (e: ApiException.InvalidInput) {
                throw IllegalArgumentException(e.reason, e)
            }
            return TernConfig(
                dbPath, endpoint, writeKey, policy.copy(), strict, errorListener,
                httpClient ?: UrlConnectionHttpClient(),
                listOf(app[0], app[1], app[2], os[0], os[1], device[0], device[1], locale, timezone),
            )
        }

        private fun millisOf(setting: String, d: Duration): ULong {
            if (d.isNegative()) problems += "$setting must not be negative, not $d"
            return d.inWholeMilliseconds.coerceAtLeast(0).toULong()
        }

        private fun nonNegative(setting: String, n: Int): Int {
            if (n < 0) problems += "$setting must not be negative, not $n"
            return n.coerceAtLeast(0)
        }

        private fun nonNegative(setting: String, n: Long): ULong {
            if (n < 0) problems += "$setting must not be negative, not $n"
            return n.coerceAtLeast(0).toULong()
        }
    }
}

/**
 * Tern's tracker for Kotlin: `track("checkout", mapOf("total" to 59.9))`.
 *
 * Safe from any thread. [track] and the other calls that set state never block or touch the
 * disk on the calling thread, so they suit the main thread: events are handed to the SDK's own
 * threads, which store them in SQLite and upload them. [flush], [flushAndWait], [close] and
 * [pendingStats] wait for those threads or read the database: call them off the main thread.
 *
 * **[track] never throws**, and neither do the other calls: an event it does not take (a bad
 * name, properties over the limits, dropped on a full queue or a failing disk, a call after
 * [close]) is counted ([errorCounts]), logged once per reason (`java.util.logging`, logger
 * `dev.tern`, which Android sends to logcat), and passed to the [ErrorListener] if one is set.
 * With [TernConfig.Builder.strict] the calls throw [TernException] instead, for tests and debug
 * builds. Only the constructor throws: [TernException] when the buffer cannot be opened.
 */
class Tracker(config: TernConfig) : AutoCloseable {
    /** The tracker with the default policy, or the realtime preset; see [TernConfig.Builder]. */
    constructor(
        dbPath: String,
        endpoint: String,
        writeKey: String,
        realtime: Boolean = false,
        appId: String? = null,
        appVersion: String? = null,
        appBuild: String? = null,
        osName: String? = null,
        osVersion: String? = null,
        deviceManufacturer: String? = null,
        deviceModel: String? = null,
        locale: String? = null,
        timezone: String? = null,
        httpClient: HttpClient = UrlConnectionHttpClient(),
    ) : this(
        TernConfig.Builder(dbPath, endpoint, writeKey)
            .apply { if (realtime) realtime() }
            .app(appId, appVersion, appBuild)
            .os(osName, osVersion)
            .device(deviceManufacturer, deviceModel)
            .locale(locale)
            .timezone(timezone)
            .httpClient(httpClient)
            .build(),
    )

    private val inner: FfiTracker
    private val strict = config.strict

    // Read only when a call failed: a tracker without a listener pays nothing on success.
    @Volatile private var errorListener: ErrorListener? = config.errorListener
    private val errorCounts = TrackErrorReason.entries.associateWith { AtomicLong() }
    private val listenerFailures = AtomicLong()

    init {
        val c = config.context
        inner = FfiTracker(
            TrackerConfig(
                config.dbPath, config.endpoint, config.writeKey, config.policy,
                c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7], c[8],
            ),
            config.httpClient,
        )
    }

    /** The install's stable id. */
    val installId: String get() = inner.installId()

    /**
     * Sets (or, with null, removes) the listener that hears about every refused call. It runs
     * on the calling thread; what it throws is caught.
     */
    fun setErrorListener(listener: ErrorListener?) {
        errorListener = listener
    }

    /** How many calls were refused since the tracker started, by reason. */
    fun errorCounts(): Map<TrackErrorReason, Long> = errorCounts.mapValues { it.value.get() }

    /**
     * Tracks an event; returns its event id, or null when it was not taken (see the class
     * documentation) or the user opted out. Never throws unless the config is strict.
     */
    @Throws(TernException::class)
    fun track(name: String, properties: Map<String, Any?> = emptyMap()): String? =
        guarded("track", name, null) { inner.track(name, Json.encode(properties)) }

    /** Sets (or clears, with null) the user id of the following events. */
    fun identify(userId: String?) = guarded("identify", null, Unit) { inner.identify(userId) }

    /** Properties added to every following event; refused ones are reported like [track]'s. */
    @Throws(TernException::class)
    fun setSuperProperties(properties: Map<String, Any?>) =
        guarded("setSuperProperties", null, Unit) { inner.setSuperProperties(Json.encode(properties)) }

    /** Forgets the user and the super-properties; starts a new session. */
    fun reset() = guarded("reset", null, Unit) { inner.reset() }

    /** Waits until tracked events are durable (at most [timeoutMs]), then uploads; false after [close]. */
    fun flush(timeoutMs: Long = 5_000): Boolean =
        guarded("flush", null, false) { inner.flush(timeoutMs.coerceAtLeast(0).toULong()) }

    /** Flushes and waits until the collector acknowledged everything (at most [timeoutMs]). */
    fun flushAndWait(timeoutMs: Long = 30_000): Boolean =
        guarded("flushAndWait", null, false) { inner.flushAndWait(timeoutMs.coerceAtLeast(0).toULong()) }

    /** The app went to the background: upload now (does not block). */
    fun onBackground() = guarded("onBackground", null, Unit) { inner.onBackground() }

    /** The app came to the foreground. */
    fun onForeground() = guarded("onForeground", null, Unit) { inner.onForeground() }

    /**
     * The network is back (a ConnectivityManager callback): upload now, skipping a backoff that
     * came from connectivity failures; a server's backoff still holds. Does not block.
     */
    fun networkAvailable() = guarded("networkAvailable", null, Unit) { inner.networkAvailable() }

    /** Stops collection and purges the buffer (true), or resumes (false). */
    fun setOptOut(optedOut: Boolean) = guarded("setOptOut", null, Unit) { inner.setOptOut(optedOut) }

    /** What waits in the buffer, for a debug screen. */
    fun pendingStats(): TernStats = inner.pendingStats()

    /**
     * Stops the SDK's threads and closes the buffer, whose file can be opened again at once;
     * buffered events stay for the next start. Later calls are refused with
     * [TrackErrorReason.CLOSED].
     */
    override fun close() = guarded("close", null, Unit) { inner.shutdown() }

    /** Runs [block]; a failure is reported (and thrown only when strict), [fallback] returned. */
    private inline fun <T> guarded(call: String, eventName: String?, fallback: T, block: () -> T): T =
        try {
            block()
        } catch (e: Exception) {
            refused(call, eventName, e)
            fallback
        } catch (e: StackOverflowError) {
            // Properties that contain themselves: the encoder recursed until the stack ran out.
            refused(call, eventName, e)
            fallback
        }

    private fun refused(call: String, eventName: String?, e: Throwable) {
        val reason = when (e) {
            is ApiException.InvalidInput, is StackOverflowError -> TrackErrorReason.INVALID_EVENT
            is ApiException.Dropped -> TrackErrorReason.DROPPED
            is ApiException.Closed -> TrackErrorReason.CLOSED
            else -> TrackErrorReason.INTERNAL
        }
        val message = when (e) {
            // uniffi's own message prefixes the field name ("reason=..."): take the field.
            is ApiException.InvalidInput -> e.reason
            is ApiException.Dropped -> e.reason
            is ApiException.Closed -> "the tracker is shut down"
            is StackOverflowError -> "properties contain themselves"
            else -> e.message ?: e.javaClass.name
        }
        if (errorCounts.getValue(reason).incrementAndGet() == 1L) {
            log.warning("Tern: $call refused (${reason.code}): $message; later ${reason.code} errors are only counted")
        }
        errorListener?.let { listener ->
            try {
                listener.onError(TrackError(reason, call, eventName, message, e))
            } catch (t: Throwable) {
                if (t is VirtualMachineError) throw t
                if (listenerFailures.incrementAndGet() == 1L) {
                    log.log(Level.WARNING, "Tern: the error listener threw; its exceptions are caught", t)
                }
            }
        }
        if (strict) throw e
    }

    private companion object {
        val log: Logger = Logger.getLogger("dev.tern")
    }
}

/**
 * The default [HttpClient]: HttpURLConnection, on Android and on the JVM, so the platform's
 * proxies and trust store (and, on Android, the app's network security config) apply. Never
 * follows a redirect (a followed 302 would turn the POST into a GET whose 200 could delete the
 * batch); the timeout applies to connecting and to each read.
 */
class UrlConnectionHttpClient : HttpClient {
    override fun post(request: HttpRequest): HttpResponse {
        val connection = try {
            URI(request.url).toURL().openConnection() as HttpURLConnection
        } catch (e: IOException) {
            throw TransportException.Network(e.toString())
        }
        try {
            val timeoutMs = request.timeoutMs.coerceAtMost(Int.MAX_VALUE.toULong()).toInt()
            connection.requestMethod = "POST"
            connection.instanceFollowRedirects = false
            connection.useCaches = false
            connection.doOutput = true
            connection.connectTimeout = timeoutMs
            connection.readTimeout = timeoutMs
            connection.setFixedLengthStreamingMode(request.body.size)
            for ((name, value) in request.headers) connection.setRequestProperty(name, value)
            connection.outputStream.use { it.write(request.body) }
            val status = connection.responseCode
            if (status !in 100..999) throw IOException("not an HTTP answer (status $status)")
            // Below 400 the body is the input stream; from 400 on, the error stream (or none).
            val stream = if (status >= 400) connection.errorStream else connection.inputStream
            return HttpResponse(
                status.toUShort(),
                connection.getHeaderField("Retry-After"),
                connection.getHeaderField("Location"),
                stream?.use { readAtMost(it, request.maxResponseBytes) } ?: ByteArray(0),
            )
        } catch (e: IOException) {
            connection.disconnect()
            throw TransportException.Network(e.toString())
        }
    }

    /** At most [max] bytes; a body cut short by the network is still the answer's. */
    private fun readAtMost(input: InputStream, max: ULong): ByteArray {
        val limit = max.coerceAtMost(Int.MAX_VALUE.toULong() / 2u).toInt()
        val out = ByteArrayOutputStream()
        val buffer = ByteArray(8192)
        try {
            while (out.size() < limit) {
                val n = input.read(buffer, 0, minOf(buffer.size, limit - out.size()))
                if (n < 0) break
                out.write(buffer, 0, n)
            }
        } catch (_: IOException) {
            // Keep what arrived: the status decides, and a cut acknowledgement is no ack.
        }
        return out.toByteArray()
    }
}

/** JSON for properties: maps, lists, arrays, numbers, booleans, strings and null. */
internal object Json {
    fun encode(value: Any?): String = StringBuilder().also { write(it, value) }.toString()

    private fun write(out: StringBuilder, value: Any?) {
        when (value) {
            null -> out.append("null")
            is String -> string(out, value)
            is Boolean -> out.append(value)
            is Int, is Long, is Short, is Byte -> out.append(value)
            is Double -> number(out, value)
            is Float -> number(out, value.toDouble())
            is Number -> out.append(value.toString())
            is Map<*, *> -> {
                out.append('{')
                value.entries.forEachIndexed { i, (k, v) ->
                    if (i > 0) out.append(',')
                    string(out, k.toString())
                    out.append(':')
                    write(out, v)
                }
                out.append('}')
            }
            is Iterable<*> -> list(out, value.toList())
            is Array<*> -> list(out, value.toList())
            else -> string(out, value.toString())
        }
    }

    private fun list(out: StringBuilder, items: List<Any?>) {
        out.append('[')
        items.forEachIndexed { i, v ->
            if (i > 0) out.append(',')
            write(out, v)
        }
        out.append(']')
    }

    private fun number(out: StringBuilder, d: Double) {
        // JSON has no NaN or infinities: send them as null rather than invalid JSON.
        if (d.isNaN() || d.isInfinite()) out.append("null") else out.append(d)
    }

    private fun string(out: StringBuilder, s: String) {
        out.append('"')
        for (c in s) {
            when {
                c == '"' -> out.append("\\\"")
                c == '\\' -> out.append("\\\\")
                c == '\n' -> out.append("\\n")
                c == '\r' -> out.append("\\r")
                c == '\t' -> out.append("\\t")
                c < ' ' -> out.append(String.format("\\u%04x", c.code))
                else -> out.append(c)
            }
        }
        out.append('"')
    }
}
