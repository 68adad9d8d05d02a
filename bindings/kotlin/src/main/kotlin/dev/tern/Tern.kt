package dev.tern

import dev.tern.internal.ApiException
import dev.tern.internal.PendingStats
import dev.tern.internal.Refusal
import dev.tern.internal.RefusalKind
import dev.tern.internal.TrackerConfig
import dev.tern.internal.TransportException
import java.io.ByteArrayOutputStream
import java.io.IOException
import java.io.InputStream
import java.net.HttpURLConnection
import java.net.URI
import java.util.concurrent.TimeUnit
import java.util.concurrent.atomic.AtomicLong
import java.util.concurrent.locks.LockSupport
import java.util.concurrent.locks.ReentrantLock
import java.util.logging.Level
import java.util.logging.Logger
import kotlin.concurrent.withLock
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
 * the main thread) for what is refused at the call (properties that cannot be encoded, a full
 * queue, a call after close), and on the SDK's hand-off thread (or the thread calling
 * [Tracker.flush] or [Tracker.close]) for what the SDK's checks refuse: keep it short, hand heavy
 * work elsewhere. An exception it throws is caught and logged; it never reaches the caller.
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
    /** The hand-off queue's bound in bytes, when a test sets one (otherwise the SDK's). */
    internal val handoffQueueBytes: Int?,
    /** How long a call waits for room, when a test sets it (otherwise the SDK's). */
    internal val handoffMaxBlockMs: Long?,
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
        private var handoffQueueBytes: Int? = null
        private var handoffMaxBlockMs: Long? = null

        /** A smaller hand-off queue, for tests that fill it. */
        internal fun handoffQueueBytes(bytes: Int) = apply { handoffQueueBytes = bytes }

        /** A longer wait for room, for tests whose machine may stall a thread for longer than the SDK's bound. */
        internal fun handoffMaxBlockMs(ms: Long) = apply { handoffMaxBlockMs = ms }

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
                handoffQueueBytes,
                handoffMaxBlockMs,
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
 * Safe from any thread. [track] and the other calls that set state ([identify],
 * [setSuperProperties], [reset], [setOptOut]) suit the main thread: each reads the clocks,
 * encodes itself into a compact buffer, appends it to an in-process queue and returns, without
 * crossing into the native library. The tracker's hand-off thread passes everything queued to
 * the SDK in one crossing, in the order of the calls; the SDK validates and stamps the events and
 * stores them in SQLite (an event for which [track] returned is durable within the bound that
 * `docs/sdk.md` states). The queue is bounded in bytes: when the SDK cannot keep up, a call waits
 * at most 100 ms for room, then the event is dropped, counted and reported to the collector,
 * never silently. [flush], [flushAndWait], [onBackground] and [close] first hand over what is
 * queued. [flush], [flushAndWait], [close] and [pendingStats] wait for the SDK's threads or read
 * the database: call them off the main thread.
 *
 * **[track] never throws**, and neither do the other calls: an event the SDK does not take (a
 * bad name, properties over the limits, dropped on a full queue or a failing disk, a call after
 * [close]) is counted ([errorCounts]), logged once per reason (`java.util.logging`, logger
 * `dev.tern`, which Android sends to logcat), and passed to the [ErrorListener] if one is set.
 * With [TernConfig.Builder.strict] each call crosses at once and throws [TernException] instead,
 * for tests and debug builds. Only the constructor throws: [TernException] when the buffer
 * cannot be opened.
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
    private val queue: HandoffQueue
    private val writers = ThreadLocal.withInitial { CallWriter() }

    /** Held while handing the queue over, so that crossings keep the order of the calls. */
    private val drainLock = ReentrantLock()
    private val drainThread: Thread

    @Volatile private var stopping = false

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
        val limits = dev.tern.internal.handoffLimits()
        queue = HandoffQueue(
            config.handoffQueueBytes ?: limits.maxQueueBytes.coerceAtMost(Int.MAX_VALUE.toULong() / 4u).toInt(),
            TimeUnit.MILLISECONDS.toNanos(config.handoffMaxBlockMs ?: limits.maxTrackBlockMs.toLong()),
        )
        drainThread = Thread(::drainLoop, "tern-handoff").apply { isDaemon = true }
        queue.drainer = drainThread
        drainThread.start()
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

    /** Runs [block] while nothing is handed over (tests that need the queue to stay full). */
    internal fun <T> holdingHandOff(block: () -> T): T = drainLock.withLock(block)

    /** How many calls found the hand-off queue full and waited for room. */
    internal fun queueFullWaits(): Long = queue.fullWaits

    /** How many calls were refused since the tracker started, by reason. */
    fun errorCounts(): Map<TrackErrorReason, Long> = errorCounts.mapValues { it.value.get() }

    /**
     * Tracks an event: queues it and returns (see the class documentation; the event appears in
     * the stream under an `event_id` the SDK gives it). Never throws unless the config is strict.
     */
    @Throws(TernException::class)
    fun track(name: String, properties: Map<String, Any?> = emptyMap()) {
        val wallMs = System.currentTimeMillis()
        val monoNs = MonotonicClock.nanos()
        enqueue("track", name, isEvent = true) {
            it.u8(Call.TRACK)
            it.i64(wallMs)
            it.i64(monoNs)
            it.str(name)
            it.json(properties)
        }
    }

    /** Sets (or clears, with null) the user id of the following events. */
    fun identify(userId: String?) = enqueue("identify", null, isEvent = false) {
        it.u8(Call.IDENTIFY)
        if (userId == null) {
            it.u8(0)
        } else {
            it.u8(1)
            it.str(userId)
        }
    }

    /** Properties added to every following event; refused ones are reported like [track]'s. */
    @Throws(TernException::class)
    fun setSuperProperties(properties: Map<String, Any?>) = enqueue("setSuperProperties", null, isEvent = false) {
        it.u8(Call.SUPER_PROPERTIES)
        it.json(properties)
    }

    /** Forgets the user and the super-properties; starts a new session. */
    fun reset() = enqueue("reset", null, isEvent = false) { it.u8(Call.RESET) }

    /**
     * Hands over what is queued and waits until it is durable (at most [timeoutMs]), then
     * uploads; false after [close].
     */
    fun flush(timeoutMs: Long = 5_000): Boolean {
        drain()
        return guarded("flush", null, false) { inner.flush(timeoutMs.coerceAtLeast(0).toULong()) }
    }

    /** Flushes and waits until the collector acknowledged everything (at most [timeoutMs]). */
    fun flushAndWait(timeoutMs: Long = 30_000): Boolean {
        drain()
        return guarded("flushAndWait", null, false) { inner.flushAndWait(timeoutMs.coerceAtLeast(0).toULong()) }
    }

    /** The app went to the background: hands over what is queued and uploads now (does not wait for the upload). */
    fun onBackground() {
        drain()
        guarded("onBackground", null, Unit) { inner.onBackground() }
    }

    /** The app came to the foreground. */
    fun onForeground() = guarded("onForeground", null, Unit) { inner.onForeground() }

    /**
     * The network is back (a ConnectivityManager callback): upload now, skipping a backoff that
     * came from connectivity failures; a server's backoff still holds. Does not block.
     */
    fun networkAvailable() = guarded("networkAvailable", null, Unit) { inner.networkAvailable() }

    /** Stops collection and purges the buffer (true), or resumes (false); in order with the other calls. */
    fun setOptOut(optedOut: Boolean) = enqueue("setOptOut", null, isEvent = false) {
        it.u8(Call.OPT_OUT)
        it.u8(if (optedOut) 1 else 0)
    }

    /** What waits in the buffer, for a debug screen (events still in the hand-off queue included). */
    fun pendingStats(): TernStats {
        val queued = queue.queuedEvents.toULong()
        return inner.pendingStats().let { it.copy(pendingEvents = it.pendingEvents + queued) }
    }

    /**
     * Hands over what is queued, stops the SDK's threads and closes the buffer, whose file can be
     * opened again at once; buffered events stay for the next start. Later calls are refused with
     * [TrackErrorReason.CLOSED].
     */
    override fun close() {
        queue.close()
        stopping = true
        LockSupport.unpark(drainThread)
        if (Thread.currentThread() !== drainThread) drainThread.join(CLOSE_JOIN_MS)
        drain()
        guarded("close", null, Unit) { inner.shutdown() }
    }

    /** Encodes a call and queues it (or, when strict, hands it over at once and throws what the SDK refused). */
    private inline fun enqueue(call: String, eventName: String?, isEvent: Boolean, encode: (CallWriter) -> Unit) {
        val writer = writers.get()
        try {
            writer.reset()
            encode(writer)
        } catch (e: Exception) {
            refused(call, eventName, e, mayThrow = true)
            return
        } catch (e: StackOverflowError) {
            refused(call, eventName, e, mayThrow = true)
            return
        }
        if (strict) {
            handOverNow(writer)
            return
        }
        when (queue.offer(writer.bytes, writer.size, isEvent)) {
            Offer.QUEUED -> {}
            Offer.FULL -> refused(call, eventName, ApiException.Dropped(QUEUE_FULL_MESSAGE), mayThrow = true)
            Offer.CLOSED -> refused(call, eventName, ApiException.Closed(), mayThrow = true)
        }
    }

    /** Strict mode: what is queued, then this call, one crossing each on the caller's thread. */
    private fun handOverNow(writer: CallWriter) {
        val refusals = drainLock.withLock {
            drainLocked(mayThrow = false)
            if (queue.isClosed()) {
                listOf(Refusal(0u, "call", null, RefusalKind.CLOSED, "the tracker is shut down"))
            } else {
                inner.trackMany(writer.bytes.copyOf(writer.size), MonotonicClock.nanos(), 0uL)
            }
        }
        refusals.forEach { report(it, mayThrow = true) }
    }

    /**
     * The hand-off thread: sleeps until a call is queued (the call that makes the queue non-empty
     * wakes it; no timer, so an idle app never wakes it), then hands everything queued over.
     */
    private fun drainLoop() {
        while (!stopping) {
            if (queue.isEmpty()) LockSupport.park(this) else drainLock.withLock { drainLocked(mayThrow = false, chunk = true) }
        }
    }

    /** Hands everything queued to the SDK (one crossing) and reports what it refused. */
    private fun drain() = drainLock.withLock { drainLocked(mayThrow = false) }

    /**
     * One crossing: everything queued, or with [chunk] only its oldest part (see
     * [HandoffQueue.take]), which frees room for waiting callers sooner during a burst.
     */
    private fun drainLocked(mayThrow: Boolean, chunk: Boolean = false) {
        val (calls, dropped) = queue.take(chunk) ?: return
        val refusals = try {
            inner.trackMany(calls, MonotonicClock.nanos(), dropped.toULong())
        } catch (e: Exception) {
            // A panic in the SDK, caught at the boundary: a bug; the calls of this crossing may be lost.
            refused("track", null, e, mayThrow)
            return
        }
        refusals.forEach { report(it, mayThrow) }
    }

    private fun report(refusal: Refusal, mayThrow: Boolean) {
        val cause = when (refusal.kind) {
            RefusalKind.INVALID_INPUT -> ApiException.InvalidInput(refusal.reason)
            RefusalKind.DROPPED -> ApiException.Dropped(refusal.reason)
            RefusalKind.CLOSED -> ApiException.Closed()
            RefusalKind.INTERNAL -> IllegalStateException(refusal.reason)
        }
        refused(refusal.call, refusal.eventName, cause, mayThrow)
    }

    /** Runs [block]; a failure is reported (and thrown only when strict), [fallback] returned. */
    private inline fun <T> guarded(call: String, eventName: String?, fallback: T, block: () -> T): T =
        try {
            block()
        } catch (e: Exception) {
            refused(call, eventName, e, mayThrow = true)
            fallback
        }

    /** Counts, logs and reports a refused call; throws it when strict and on the caller's thread ([mayThrow]). */
    private fun refused(call: String, eventName: String?, e: Throwable, mayThrow: Boolean) {
        val reason = when (e) {
            is ApiException.InvalidInput, is StackOverflowError, is TooDeep -> TrackErrorReason.INVALID_EVENT
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
            is TooDeep -> e.message ?: "properties nest too deep"
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
        if (strict && mayThrow) throw e
    }

    private companion object {
        val log: Logger = Logger.getLogger("dev.tern")

        /** How long [close] waits for the hand-off thread to finish a crossing in progress. */
        const val CLOSE_JOIN_MS = 10_000L

        const val QUEUE_FULL_MESSAGE =
            "the hand-off queue stayed full: the SDK cannot store events as fast as they are tracked"
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
