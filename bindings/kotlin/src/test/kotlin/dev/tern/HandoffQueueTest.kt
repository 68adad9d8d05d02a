package dev.tern

import org.junit.jupiter.api.Assertions.assertArrayEquals
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertNull
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Test

/** The hand-off queue on its own: what a chunked take hands over, and what stays. */
class HandoffQueueTest {
    /** A call of [len] bytes, every byte its index (so the order shows in the bytes). */
    private fun call(index: Int, len: Int) = ByteArray(len) { index.toByte() }

    @Test
    fun chunkedTakesHandOverWholeCallsInOrderAndFreeRoomAsTheyGo() {
        val queue = HandoffQueue(maxBytes = 1024 * 1024, maxBlockNanos = 1_000_000)
        val sent = java.io.ByteArrayOutputStream()
        var events = 0
        for (i in 0 until 3_000) {
            // Sizes that never line up with the chunk size; every third call is no event.
            val bytes = call(i, 100 + (i % 7) * 37)
            val isEvent = i % 3 != 0
            assertEquals(Offer.QUEUED, queue.offer(bytes, bytes.size, isEvent))
            sent.write(bytes)
            if (isEvent) events++
        }
        assertEquals(events, queue.queuedEvents)
        val received = java.io.ByteArrayOutputStream()
        var parts = 0
        while (true) {
            val before = queue.queuedEvents
            val (part, drops) = queue.take(chunk = true) ?: break
            assertEquals(0L, drops)
            parts++
            val rest = queue.queuedEvents
            assertTrue(rest <= before, "the events still queued only go down")
            if (rest > 0) {
                // A chunk ends on a call: the next byte starts a call of another index.
                assertTrue(part.size >= HandoffQueue.CHUNK_BYTES, "a chunk is at least CHUNK_BYTES: ${part.size}")
                assertTrue(part.size < HandoffQueue.CHUNK_BYTES + 400, "and at most one call more: ${part.size}")
            }
            received.write(part)
        }
        assertTrue(parts > 2, "taken in several chunks, not whole: $parts")
        assertArrayEquals(sent.toByteArray(), received.toByteArray(), "every call once, in order")
        assertEquals(0, queue.queuedEvents)
        assertNull(queue.take(chunk = true))
    }

    @Test
    fun aWholeTakeAfterChunkedOnesTakesTheRestAndNewCallsCutAgain() {
        val queue = HandoffQueue(maxBytes = 1024 * 1024, maxBlockNanos = 1_000_000)
        val call = call(1, 1000)
        repeat(600) { queue.offer(call, call.size, isEvent = true) }
        val (first, _) = queue.take(chunk = true)!!
        assertEquals(0, first.size % 1000, "whole calls")
        assertTrue(first.size in HandoffQueue.CHUNK_BYTES until HandoffQueue.CHUNK_BYTES + 1000)
        val (rest, _) = queue.take()!!
        assertEquals(600 * 1000, first.size + rest.size)
        assertEquals(0, queue.queuedEvents)
        repeat(300) { queue.offer(call, call.size, isEvent = true) }
        val (again, _) = queue.take(chunk = true)!!
        assertTrue(again.size < 300 * 1000, "cut again after a whole take: ${again.size}")
        assertEquals(300 - again.size / 1000, queue.queuedEvents)
    }

    @Test
    fun callsQueuedWhileChunksAreTakenKeepTheirOrderAcrossTheArraysReuse() {
        val queue = HandoffQueue(maxBytes = 512 * 1024, maxBlockNanos = 1_000_000)
        val sent = java.io.ByteArrayOutputStream()
        val received = java.io.ByteArrayOutputStream()
        var index = 0
        // Offers and chunked takes interleaved, far past the array's length, so that the queued
        // calls are moved to its start (and their cuts with them) many times.
        repeat(200) {
            repeat(700) {
                val bytes = call(index, 50 + (index % 11) * 29)
                index++
                if (queue.offer(bytes, bytes.size, isEvent = true) == Offer.QUEUED) sent.write(bytes)
            }
            queue.take(chunk = true)?.let { received.write(it.first) }
        }
        while (true) received.write((queue.take(chunk = true) ?: break).first)
        assertEquals(0, queue.queuedEvents)
        assertTrue(sent.size() > 20 * 1024 * 1024, "many array lengths went through: ${sent.size()}")
        assertArrayEquals(sent.toByteArray(), received.toByteArray(), "every queued call once, in order")
    }
}
