package dev.tern.bench

import com.sun.net.httpserver.HttpExchange
import com.sun.net.httpserver.HttpServer
import kotlinx.serialization.json.Json
import kotlinx.serialization.json.jsonArray
import kotlinx.serialization.json.jsonObject
import java.net.InetAddress
import java.net.InetSocketAddress
import java.util.concurrent.ExecutorService
import java.util.concurrent.Executors
import java.util.concurrent.atomic.AtomicLong
import java.util.zip.GZIPInputStream

/**
 * A peer's backend stand-in on 127.0.0.1 (a free port): answers every upload 200 with the body
 * its client expects and counts what arrived: requests, request body bytes as sent (compressed
 * when the client compresses) and events in the JSON batches (gunzipped first when the request
 * says `Content-Encoding: gzip`). [routes] answers the other paths (settings, flags).
 */
class CountingServer(
    /** The path of batch uploads, e.g. `/v1/b`. */
    private val batchPath: String,
    /** The key of the events array in the batch JSON (`batch` for both Segment and PostHog). */
    private val batchKey: String,
    /** The answer to an accepted batch. */
    private val batchAnswer: String,
    /** Answers to other requests, by path prefix; 404 for the rest. */
    private val routes: Map<String, (HttpExchange) -> String> = emptyMap(),
) : AutoCloseable {
    /** Events counted in accepted batches. */
    val events = AtomicLong()

    /** Request body bytes of batch uploads, as received. */
    val bodyBytes = AtomicLong()

    /** Batch uploads received. */
    val requests = AtomicLong()

    /** Batches that could not be read (counted, answered 400). */
    val unreadable = AtomicLong()

    init {
        // The JDK server writes an answer's headers and body in two writes; with Nagle on, the
        // body waits for the client's delayed ACK (40 ms a request). Read once, at first use.
        System.setProperty("sun.net.httpserver.nodelay", "true")
    }

    private val executor: ExecutorService = Executors.newFixedThreadPool(2) { r ->
        Thread(r, "counting-server").apply { isDaemon = true }
    }
    private val server: HttpServer = HttpServer.create(InetSocketAddress(InetAddress.getLoopbackAddress(), 0), 64)

    init {
        server.executor = executor
        server.createContext("/") { exchange -> exchange.use { handle(it) } }
        server.start()
    }

    /** `127.0.0.1:PORT`. */
    val hostPort: String get() = "127.0.0.1:${server.address.port}"

    private fun handle(exchange: HttpExchange) {
        val path = exchange.requestURI.path
        val raw = exchange.requestBody.readAllBytes()
        if (exchange.requestMethod == "POST" && path == batchPath) {
            requests.incrementAndGet()
            bodyBytes.addAndGet(raw.size.toLong())
            val gzip = exchange.requestHeaders.getFirst("Content-Encoding")?.contains("gzip") == true
            val n = try {
                val text = if (gzip) GZIPInputStream(raw.inputStream()).readAllBytes() else raw
                Json.parseToJsonElement(String(text, Charsets.UTF_8)).jsonObject.getValue(batchKey).jsonArray.size
            } catch (e: Exception) {
                unreadable.incrementAndGet()
                reply(exchange, 400, """{"error":"unreadable batch"}""")
                return
            }
            events.addAndGet(n.toLong())
            reply(exchange, 200, batchAnswer)
            return
        }
        val route = routes.entries.firstOrNull { path.startsWith(it.key) }
        if (route == null) reply(exchange, 404, "{}") else reply(exchange, 200, route.value(exchange))
    }

    private fun reply(exchange: HttpExchange, status: Int, body: String) {
        val bytes = body.toByteArray(Charsets.UTF_8)
        exchange.responseHeaders.add("Content-Type", "application/json")
        exchange.sendResponseHeaders(status, bytes.size.toLong())
        exchange.responseBody.use { it.write(bytes) }
    }

    override fun close() {
        server.stop(0)
        executor.shutdownNow()
    }
}
