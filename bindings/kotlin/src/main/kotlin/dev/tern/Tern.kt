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
import dev.tern.internal.Tracker as FfiTracker

/** Errors from the SDK (invalid input, dropped event, unavailable tracker, closed). */
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

/**
 * Tern's tracker for Kotlin: `track("checkout", mapOf("total" to 59.9))`.
 *
 * Safe from any thread. [track] and the other calls that set state never block or touch the
 * disk on the calling thread, so they suit the main thread: events are handed to the SDK's own
 * threads, which store them in SQLite and upload them. [flush], [flushAndWait], [close] and
 * [pendingStats] wait for those threads or read the database: call them off the main thread.
 *
 * [track] throws [TernException] when it does not take the event: `InvalidInput` (bad name,
 * properties over the limits), `Dropped` (the hand-off queue is full or the disk is failing;
 * the loss is counted and reported), `Closed` after [close]. Catch it where a lost event must
 * not end the app (see the Android sample).
 */
class Tracker(
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
) : AutoCloseable {
    private val inner = FfiTracker(
        TrackerConfig(
            dbPath, endpoint, writeKey, realtime, appId, appVersion, appBuild,
            osName, osVersion, deviceManufacturer, deviceModel, locale, timezone,
        ),
        httpClient,
    )

    /** The install's stable id. */
    val installId: String get() = inner.installId()

    /** Tracks an event; returns its event id (null after opt-out). */
    @Throws(TernException::class)
    fun track(name: String, properties: Map<String, Any?> = emptyMap()): String? =
        inner.track(name, Json.encode(properties))

    /** Sets (or clears, with null) the user id of the following events. */
    fun identify(userId: String?) = inner.identify(userId)

    /** Properties added to every following event. */
    @Throws(TernException::class)
    fun setSuperProperties(properties: Map<String, Any?>) = inner.setSuperProperties(Json.encode(properties))

    /** Forgets the user and the super-properties; starts a new session. */
    fun reset() = inner.reset()

    /** Waits until tracked events are durable (at most [timeoutMs]), then uploads. */
    fun flush(timeoutMs: Long = 5_000): Boolean = inner.flush(timeoutMs.toULong())

    /** Flushes and waits until the collector acknowledged everything (at most [timeoutMs]). */
    fun flushAndWait(timeoutMs: Long = 30_000): Boolean = inner.flushAndWait(timeoutMs.toULong())

    /** The app went to the background: upload now (does not block). */
    fun onBackground() = inner.onBackground()

    /** The app came to the foreground. */
    fun onForeground() = inner.onForeground()

    /** Stops collection and purges the buffer (true), or resumes (false). */
    fun setOptOut(optedOut: Boolean) = inner.setOptOut(optedOut)

    /** What waits in the buffer, for a debug screen. */
    fun pendingStats(): TernStats = inner.pendingStats()

    /**
     * Stops the SDK's threads and closes the buffer, whose file can be opened again at once;
     * buffered events stay for the next start. Later calls throw [TernException.Closed].
     */
    override fun close() = inner.shutdown()
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
