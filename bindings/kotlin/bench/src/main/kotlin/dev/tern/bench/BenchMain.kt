package dev.tern.bench

import kotlinx.serialization.json.Json
import kotlinx.serialization.json.JsonObject
import kotlinx.serialization.json.JsonPrimitive
import kotlinx.serialization.json.jsonObject
import kotlinx.serialization.json.jsonPrimitive
import kotlinx.serialization.json.longOrNull
import kotlinx.serialization.json.doubleOrNull
import org.openjdk.jmh.annotations.Mode
import org.openjdk.jmh.runner.Runner
import org.openjdk.jmh.runner.options.OptionsBuilder
import org.openjdk.jmh.runner.options.TimeValue
import org.openjdk.jmh.runner.options.VerboseMode
import java.io.File
import java.nio.file.Files
import java.util.concurrent.TimeUnit

/**
 * `BenchMain --collector URL [--rounds N] [--no-jmh] [--out FILE]`: Tern, Segment and PostHog
 * side by side. Each round runs every peer once, in an order rotated from round to round, and
 * each peer in JVMs of its own, one after the other (never two SDKs at once on the 2 cores):
 * first [PeerRun] (nanoTime latencies, delivery, flat-out calls/s), then a JMH SampleTime fork.
 * Prints a table and one JSON line per peer (medians over the rounds); every round's line goes
 * to --out.
 */
object BenchMain {
    private const val JVM_HEAP = "-Xmx4g"

    @JvmStatic
    fun main(args: Array<String>) {
        var collector: String? = null
        var rounds = 1
        var jmh = true
        var outFile: File? = null
        var i = 0
        while (i < args.size) {
            when (args[i]) {
                "--collector" -> collector = args[++i]
                "--rounds" -> rounds = args[++i].toInt()
                "--no-jmh" -> jmh = false
                "--out" -> outFile = File(args[++i])
                else -> error("unknown argument ${args[i]}")
            }
            i++
        }
        requireNotNull(collector) { "--collector URL is required" }
        val jnaPath = System.getProperty("jna.library.path") ?: error("-Djna.library.path is required")
        val tmp = Files.createTempDirectory("tern-bench")
        val jvmArgs = arrayOf(
            JVM_HEAP, "-Dsun.net.httpserver.nodelay=true", "-Djna.library.path=$jnaPath",
            "-Dtern.bench.collector=$collector", "-Dtern.bench.tmp=$tmp",
        )
        try {
            run(collector, rounds, jmh, outFile, jvmArgs, tmp.toFile())
        } finally {
            tmp.toFile().deleteRecursively()
        }
    }

    private fun run(collector: String, rounds: Int, jmh: Boolean, outFile: File?, jvmArgs: Array<String>, tmp: File) {

        val runs = Peers.NAMES.associateWith { mutableListOf<Map<String, Any>>() }
        for (round in 0 until rounds) {
            val order = Peers.NAMES.indices.map { Peers.NAMES[(it + round) % Peers.NAMES.size] }
            for (peer in order) {
                System.err.println("round ${round + 1}/$rounds: $peer")
                val run = LinkedHashMap<String, Any>(peerRun(peer, collector, jvmArgs, tmp))
                if (jmh) run.putAll(jmhRun(peer, jvmArgs))
                run["round"] = round + 1
                runs.getValue(peer) += run
                outFile?.appendText(toJson(run).toString() + "\n")
            }
        }

        println("Each round:")
        printTable(runs.values.flatten().sortedBy { it["round"].toString() }.map { it + ("peer" to "${it["peer"]} r${it["round"]}") })
        val summary = runs.mapValues { (peer, list) -> median(peer, list) }
        println("Median over ${rounds} round(s):")
        printTable(summary.values.toList())
        for (s in summary.values) println(toJson(s))
    }

    /** [PeerRun] in a child JVM with the same classpath; its JSON line. */
    private fun peerRun(peer: String, collector: String, jvmArgs: Array<String>, tmp: File): Map<String, Any> {
        val java = ProcessHandle.current().info().command().orElse("java")
        val dir = Files.createTempDirectory(tmp.toPath(), "peer-$peer")
        try {
            val process = ProcessBuilder(
                java, *jvmArgs, "-cp", System.getProperty("java.class.path"),
                PeerRun::class.java.name, peer, collector, dir.toString(),
            ).redirectError(ProcessBuilder.Redirect.INHERIT).start()
            val lines = process.inputStream.bufferedReader().readLines()
            val code = process.waitFor()
            val line = lines.lastOrNull { it.startsWith("{") } ?: error("$peer: PeerRun exited $code without a result: $lines")
            return Json.parseToJsonElement(line).jsonObject.mapValues { (_, v) ->
                val p = v.jsonPrimitive
                if (p.isString) p.content else p.longOrNull ?: p.doubleOrNull ?: p.content
            }
        } finally {
            dir.toFile().deleteRecursively()
        }
    }

    /** One JMH SampleTime fork of TrackBench for [peer]: 2 × 2 s warm-up, 5 × 2 s measured. */
    private fun jmhRun(peer: String, jvmArgs: Array<String>): Map<String, Any> {
        val options = OptionsBuilder()
            .include("${TrackBench::class.java.name}.track")
            .param("peer", peer)
            .mode(Mode.SampleTime)
            .timeUnit(TimeUnit.NANOSECONDS)
            .forks(1)
            .warmupIterations(2)
            .warmupTime(TimeValue.seconds(2))
            .measurementIterations(5)
            .measurementTime(TimeValue.seconds(2))
            .jvmArgs(*jvmArgs)
            .shouldFailOnError(true)
            .verbosity(VerboseMode.SILENT)
            .build()
        val stats = Runner(options).runSingle().primaryResult.getStatistics()
        return linkedMapOf(
            "jmh_samples" to stats.n,
            "jmh_p50_ns" to stats.getPercentile(50.0).toLong(),
            "jmh_p99_ns" to stats.getPercentile(99.0).toLong(),
            "jmh_p999_ns" to stats.getPercentile(99.9).toLong(),
            "jmh_mean_ns" to stats.mean.toLong(),
        )
    }

    /**
     * Per numeric field, the median over the rounds; for an even count the mean of the two
     * middle values, so that called = delivered + lost still holds for two rounds.
     */
    private fun median(peer: String, list: List<Map<String, Any>>): Map<String, Any> {
        val out = linkedMapOf<String, Any>("peer" to peer, "rounds" to list.size)
        for (key in list.first().keys) {
            if (key == "peer" || key == "round") continue
            val values = list.mapNotNull { it[key] as? Number }.sortedBy { it.toDouble() }
            if (values.isEmpty()) continue
            val mid = values.size / 2
            out[key] = when {
                values.size % 2 == 1 -> values[mid]
                values.all { it is Long || it is Int } -> (values[mid - 1].toLong() + values[mid].toLong()) / 2
                else -> Math.round((values[mid - 1].toDouble() + values[mid].toDouble()) * 5) / 10.0
            }
        }
        return out
    }

    private fun toJson(map: Map<String, Any>) = JsonObject(
        map.mapValues { (_, v) -> if (v is Number) JsonPrimitive(v) else JsonPrimitive(v.toString()) },
    )

    private fun printTable(table: List<Map<String, Any>>) {
        fun us(v: Any?) = if (v is Number) "%.2f".format(v.toDouble() / 1000) else "-"
        fun n(v: Any?) = if (v is Number) "%,d".format(v.toLong()) else "-"
        val header = listOf(
            "peer", "JMH p50 µs", "JMH p99 µs", "JMH p99.9 µs", "nanoTime p50 µs", "p99 µs", "p99.9 µs",
            "calls/s (10 s)", "lost of the 10 s", "called", "delivered", "lost", "bytes/event",
        )
        val rows = table.map { s ->
            listOf(
                s["peer"].toString(), us(s["jmh_p50_ns"]), us(s["jmh_p99_ns"]), us(s["jmh_p999_ns"]),
                us(s["p50_ns"]), us(s["p99_ns"]), us(s["p999_ns"]), n(s["flat_out_calls_per_s"]),
                "${n(s["flat_out_lost"])} of ${n(s["flat_out_calls"])}",
                n(s["called"]), n(s["delivered"]), n(s["lost"]), s["wire_bytes_per_event"]?.toString() ?: "-",
            )
        }
        val widths = header.indices.map { c -> (rows.map { it[c].length } + header[c].length).max() }
        fun line(cells: List<String>) = cells.mapIndexed { c, v -> if (c == 0) v.padEnd(widths[c]) else v.padStart(widths[c]) }
            .joinToString(" | ", "| ", " |")
        println(line(header))
        println(widths.joinToString("-|-", "|-", "-|") { "-".repeat(it) })
        rows.forEach { println(line(it)) }
    }
}
