package dev.tern

import java.lang.invoke.MethodHandle
import java.lang.invoke.MethodHandles
import java.lang.invoke.MethodType
import java.util.concurrent.locks.LockSupport
import java.util.concurrent.locks.ReentrantLock
import kotlin.concurrent.withLock

/*
 * The hand-off queue between the app's threads and the SDK: `track()` and the calls that set
 * state encode themselves into a compact buffer (the format is bindings/src/handoff.rs's), append
 * it to a queue bounded in bytes and return; one drain thread hands everything queued to Rust in
 * one crossing (`trackMany`). No JNA call, no native allocation and no reflection happen on the
 * caller's thread.
 */

/** The calls of the buffer (bindings/src/handoff.rs). */
internal object Call {
    const val TRACK = 1
    const val IDENTIFY = 2
    const val SUPER_PROPERTIES = 3
    const val RESET = 4
    const val OPT_OUT = 5
}

/**
 * The monotonic clock read at each call: `SystemClock.elapsedRealtimeNanos()` on Android
 * (`CLOCK_BOOTTIME`, which counts deep sleep, as the SDK's own clock does), `System.nanoTime()`
 * elsewhere. Only the time between a call and its crossing is taken from it.
 */
internal object MonotonicClock {
    private val android: MethodHandle? = try {
        MethodHandles.publicLookup().findStatic(
            Class.forName("android.os.SystemClock"),
            "elapsedRealtimeNanos",
            MethodType.methodType(Long::class.javaPrimitiveType),
        )
    } catch (_: Throwable) {
        null // not Android, or MethodHandles unavailable (before API 26): the JVM's clock
    }

    // invoke() (not invokeExact()) adapts the boxed return to the call site's type.
    fun nanos(): Long = android?.let { it.invoke() as Long } ?: System.nanoTime()
}

/** Thrown by [CallWriter.json] for properties nested past any sensible depth (or containing themselves). */
internal class TooDeep : IllegalArgumentException("properties contain themselves or nest deeper than ${CallWriter.MAX_DEPTH} levels")

/**
 * Writes calls into a reusable byte array: integers little-endian, strings as a u32 byte length
 * and UTF-8, properties as JSON (maps, lists, arrays, numbers, booleans, strings and null).
 */
internal class CallWriter(initialCapacity: Int = 1024) {
    var bytes = ByteArray(initialCapacity)
        private set
    var size = 0
        private set

    fun reset() {
        size = 0
        // A huge event grew the array: let it go rather than keep it per thread forever.
        if (bytes.size > MAX_KEPT_CAPACITY) bytes = ByteArray(1024)
    }

    private fun ensure(n: Int) {
        if (size + n > bytes.size) bytes = bytes.copyOf(maxOf(bytes.size * 2, size + n))
    }

    fun u8(v: Int) {
        ensure(1)
        bytes[size++] = v.toByte()
    }

    fun i64(v: Long) {
        ensure(8)
        for (i in 0 until 8) bytes[size++] = (v ushr (8 * i)).toByte()
    }

    /** A string field: its UTF-8 length, then its bytes. */
    fun str(s: String) = lengthPrefixed { utf8(s) }

    /** A JSON field: its length, then the value's JSON. */
    fun json(value: Any?) = lengthPrefixed { write(value, 0) }

    private inline fun lengthPrefixed(body: () -> Unit) {
        ensure(4)
        val at = size
        size += 4
        body()
        val n = size - at - 4
        for (i in 0 until 4) bytes[at + i] = (n ushr (8 * i)).toByte()
    }

    private fun ascii(s: String) {
        ensure(s.length)
        for (c in s) bytes[size++] = c.code.toByte()
    }

    private fun utf8(s: String) {
        ensure(s.length)
        var i = 0
        while (i < s.length) {
            val c = s[i]
            when {
                c.code < 0x80 -> bytes[size++] = c.code.toByte()
                else -> {
                    ensure(4 + s.length - i)
                    i = multiByte(s, i)
                }
            }
            i++
        }
    }

    /** Writes the character at [i] (a surrogate pair takes two); returns the index of its last char. */
    private fun multiByte(s: String, i: Int): Int {
        val c = s[i]
        val code = c.code
        if (code < 0x800) {
            bytes[size++] = (0xC0 or (code shr 6)).toByte()
            bytes[size++] = (0x80 or (code and 0x3F)).toByte()
            return i
        }
        if (Character.isHighSurrogate(c) && i + 1 < s.length && Character.isLowSurrogate(s[i + 1])) {
            val cp = Character.toCodePoint(c, s[i + 1])
            bytes[size++] = (0xF0 or (cp shr 18)).toByte()
            bytes[size++] = (0x80 or ((cp shr 12) and 0x3F)).toByte()
            bytes[size++] = (0x80 or ((cp shr 6) and 0x3F)).toByte()
            bytes[size++] = (0x80 or (cp and 0x3F)).toByte()
            return i + 1
        }
        // A lone surrogate is not UTF-8: the replacement character, as String.toByteArray does.
        val v = if (Character.isSurrogate(c)) 0xFFFD else code
        bytes[size++] = (0xE0 or (v shr 12)).toByte()
        bytes[size++] = (0x80 or ((v shr 6) and 0x3F)).toByte()
        bytes[size++] = (0x80 or (v and 0x3F)).toByte()
        return i
    }

    private fun write(value: Any?, depth: Int) {
        if (depth > MAX_DEPTH) throw TooDeep()
        when (value) {
            null -> ascii("null")
            is String -> string(value)
            is Boolean -> ascii(if (value) "true" else "false")
            is Int, is Long, is Short, is Byte -> ascii(value.toString())
            is Double -> number(value)
            is Float -> number(value.toDouble())
            is Number -> ascii(value.toString())
            is Map<*, *> -> {
                u8('{'.code)
                var first = true
                for ((k, v) in value) {
                    if (!first) u8(','.code)
                    first = false
                    string(k.toString())
                    u8(':'.code)
                    write(v, depth + 1)
                }
                u8('}'.code)
            }
            is Iterable<*> -> list(value.iterator(), depth)
            is Array<*> -> list(value.iterator(), depth)
            else -> string(value.toString())
        }
    }

    private fun list(items: Iterator<Any?>, depth: Int) {
        u8('['.code)
        var first = true
        for (v in items) {
            if (!first) u8(','.code)
            first = false
            write(v, depth + 1)
        }
        u8(']'.code)
    }

    private fun number(d: Double) {
        // JSON has no NaN or infinities: send them as null rather than invalid JSON.
        if (d.isNaN() || d.isInfinite()) ascii("null") else ascii(d.toString())
    }

    private fun string(s: String) {
        u8('"'.code)
        var plain = 0 // start of the run of characters that need no escape
        for (i in s.indices) {
            val c = s[i]
            val escape = when {
                c == '"' -> "\\\""
                c == '\\' -> "\\\\"
                c == '\n' -> "\\n"
                c == '\r' -> "\\r"
                c == '\t' -> "\\t"
                c < ' ' -> String.format("\\u%04x", c.code)
                else -> null
            }
            if (escape != null) {
                utf8(s.substring(plain, i))
                ascii(escape)
                plain = i + 1
            }
        }
        if (plain == 0) utf8(s) else utf8(s.substring(plain))
        u8('"'.code)
    }

    companion object {
        /** Deeper than the SDK accepts (16): past this the properties surely contain themselves. */
        const val MAX_DEPTH = 64

        /** A writer's array beyond this is released after use (one 64 KiB event's worth, twice). */
        const val MAX_KEPT_CAPACITY = 128 * 1024
    }
}

/** What [HandoffQueue.offer] did with a call. */
internal enum class Offer { QUEUED, FULL, CLOSED }

/**
 * The queue: a byte array the callers append encoded calls to, bounded by [maxBytes]; taken
 * whole by the drain thread (or a flush). Appending is a copy under a lock held for nothing
 * else; the drain thread is woken only when the queue goes from empty to non-empty.
 */
internal class HandoffQueue(private val maxBytes: Int, private val maxBlockNanos: Long) {
    private val lock = ReentrantLock()
    private val taken = lock.newCondition()

    /** The queued calls are `front[head until size]`; a chunked [take] moves [head] on. */
    private var front = ByteArray(INITIAL_BYTES)

    /** The array [take] swaps in; touched only by the taking thread outside the lock. */
    private var back = ByteArray(INITIAL_BYTES)
    private var head = 0
    private var size = 0
    private var events = 0
    private var closed = false

    /** Events dropped because the queue stayed full, not yet reported to the SDK. */
    private var dropped = 0L

    /** Calls that found the queue full and waited (for tests and diagnostics). */
    val fullWaits: Long get() = lock.withLock { waits }
    private var waits = 0L

    /**
     * Where [take] may cut the queue for a chunk: the end (an index into [front]) of the first
     * call at least [CHUNK_BYTES] past the previous cut, with the events queued up to it;
     * [cutCount] of them, in order.
     */
    private val cutEnds = IntArray(maxBytes / CHUNK_BYTES + 2)
    private val cutEvents = IntArray(cutEnds.size)
    private var cutCount = 0

    /** The thread to wake when the queue stops being empty. */
    @Volatile var drainer: Thread? = null

    /** Events queued, for pendingStats(). */
    val queuedEvents: Int get() = lock.withLock { events }

    /**
     * Appends [len] bytes of [src] (one call). A full queue waits at most [maxBlockNanos] for the
     * drain thread; then, for an event ([isEvent]), answers [Offer.FULL] and counts the drop; any
     * other call is queued anyway (an identify() or an opt-out is never dropped; the queue's
     * bound holds for events).
     */
    fun offer(src: ByteArray, len: Int, isEvent: Boolean): Offer {
        val wake: Boolean
        lock.lock()
        try {
            if (closed) return Offer.CLOSED
            if (size > head && size - head + len > maxBytes) {
                waits++
                var left = maxBlockNanos
                while (size > head && size - head + len > maxBytes && left > 0 && !closed) {
                    LockSupport.unpark(drainer)
                    left = taken.awaitNanos(left)
                }
                if (closed) return Offer.CLOSED
                if (size > head && size - head + len > maxBytes && isEvent) {
                    dropped++
                    return Offer.FULL
                }
            }
            if (size + len > front.size) {
                compact()
                if (size + len > front.size) front = front.copyOf(maxOf(front.size * 2, size + len))
            }
            System.arraycopy(src, 0, front, size, len)
            wake = size == head
            size += len
            if (isEvent) events++
            val lastCut = if (cutCount > 0) cutEnds[cutCount - 1] else head
            if (size - lastCut >= CHUNK_BYTES && cutCount < cutEnds.size) {
                cutEnds[cutCount] = size
                cutEvents[cutCount] = events
                cutCount++
            }
        } finally {
            lock.unlock()
        }
        if (wake) LockSupport.unpark(drainer)
        return Offer.QUEUED
    }

    /** Moves the queued calls to the start of [front] (under the lock): once per array's length. */
    private fun compact() {
        if (head == 0) return
        System.arraycopy(front, head, front, 0, size - head)
        for (i in 0 until cutCount) cutEnds[i] -= head
        size -= head
        head = 0
    }

    /** Refuses every later call; what is queued stays for the last [take]. */
    fun close() = lock.withLock {
        closed = true
        taken.signalAll()
    }

    /**
     * Everything queued (null when nothing is) and the drops to report with it. The queue's two
     * arrays are swapped under the lock and the taken one is copied out after it, so callers
     * never wait for a copy; one thread at a time takes (the tracker's drain lock).
     */
    fun take(): Pair<ByteArray, Long>? = take(chunk = false)

    /**
     * With [chunk], only the oldest calls up to the first cut (about [CHUNK_BYTES]) when more is
     * queued, copied out under the lock. During a burst the drain thread then frees room every
     * chunk instead of once per whole queue, so a caller waiting for room waits for one chunk's
     * hand-over, not the whole queue's.
     */
    fun take(chunk: Boolean): Pair<ByteArray, Long>? {
        val full: ByteArray
        val from: Int
        val to: Int
        val drops: Long
        lock.withLock {
            if (size == head && dropped == 0L) return null
            if (chunk && cutCount > 0 && cutEnds[0] < size) {
                val end = cutEnds[0]
                val part = front.copyOfRange(head, end)
                head = end
                events -= cutEvents[0]
                for (i in 1 until cutCount) {
                    cutEnds[i - 1] = cutEnds[i]
                    cutEvents[i - 1] = cutEvents[i] - cutEvents[0]
                }
                cutCount--
                val chunkDrops = dropped
                dropped = 0
                taken.signalAll()
                return part to chunkDrops
            }
            full = front
            from = head
            to = size
            drops = dropped
            front = back
            head = 0
            size = 0
            events = 0
            dropped = 0
            cutCount = 0
            taken.signalAll()
        }
        val out = full.copyOfRange(from, to)
        // An array grown by a burst shrinks back once drained.
        back = if (full.size > maxBytes * 2) ByteArray(INITIAL_BYTES) else full
        return out to drops
    }

    fun isEmpty(): Boolean = lock.withLock { size == head && dropped == 0L }

    fun isClosed(): Boolean = lock.withLock { closed }

    internal companion object {
        const val INITIAL_BYTES = 64 * 1024

        /** About what the drain thread takes at a time during a burst (some 400 events). */
        const val CHUNK_BYTES = 128 * 1024
    }
}
