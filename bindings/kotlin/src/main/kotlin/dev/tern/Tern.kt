package dev.tern

import dev.tern.internal.ApiException
import dev.tern.internal.PendingStats
import dev.tern.internal.TrackerConfig
import dev.tern.internal.Tracker as FfiTracker

/** Errors from the SDK (invalid input, dropped event, unavailable tracker, closed). */
typealias TernException = ApiException

/** What waits in the buffer; see [Tracker.pendingStats]. */
typealias TernStats = PendingStats

/**
 * Tern's tracker for Kotlin: `track("checkout", mapOf("total" to 59.9))`.
 *
 * Every call is cheap and safe from any thread, the main thread included: events are handed to
 * the SDK's own threads, which store them in SQLite and upload them.
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
) : AutoCloseable {
    private val inner = FfiTracker(
        TrackerConfig(
            dbPath, endpoint, writeKey, realtime, appId, appVersion, appBuild,
            osName, osVersion, deviceManufacturer, deviceModel, locale, timezone,
        ),
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

    /** Stops the SDK's threads; buffered events stay for the next start. */
    override fun close() = inner.shutdown()
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
