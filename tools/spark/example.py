"""Tern's lake read with Spark: a data scientist's starting point.

`tern-lake ingest` keeps the Delta table `events` (one row per `event_id`, partitioned by
`event_date`); Spark reads it with the Delta Lake connector, as a batch and as a stream. This
script runs in local mode on one machine; the same code runs on a cluster (EMR, Databricks)
against the table's S3 prefix (docs/lake.md, *Spark*).

    make deps build                                      # the venv gets pyspark and delta-spark
    make demo                                            # leaves a lake in target/demo-lake
    .venv/bin/python tools/spark/example.py --lake target/demo-lake
    .venv/bin/python tools/spark/example.py --lake target/demo-lake --follow 60

It prints the events per day, the checkout funnel of docs/analysis.md and, with `--follow`, the
rows each new commit adds, for that many seconds (run `tern-lake ingest` meanwhile).

The Delta jars (`io.delta:delta-spark_2.12`, the version of the pip package) come from Maven
Central on the first run and are cached in Ivy's directory: `$TERN_SPARK_IVY`, by default
`target/spark-ivy` in this repository, so later runs resolve them offline.
`tools/spark/test_spark.py` checks every answer here against `tern-lake sql` on a lake made by
the real pipeline.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from delta import configure_spark_with_delta_pip
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

ROOT = Path(__file__).resolve().parents[2]
IVY_DIR = Path(os.environ.get("TERN_SPARK_IVY", ROOT / "target/spark-ivy"))


def spark_session(app_name: str = "tern-lake") -> SparkSession:
    """A local Spark session that reads and writes Delta tables."""
    builder = (
        SparkSession.builder.master("local[*]")
        .appName(app_name)
        .config("spark.sql.extensions", "io.delta.sql.DeltaSparkSessionExtension")
        .config("spark.sql.catalog.spark_catalog", "org.apache.spark.sql.delta.catalog.DeltaCatalog")
        # The lake's timestamps are UTC and `event_date` is a UTC date: show and compare them
        # in UTC whatever the machine's zone, as `tern-lake sql` does.
        .config("spark.sql.session.timeZone", "UTC")
        # A lake on one machine has a few files per day: 200 shuffle partitions (the default,
        # sized for clusters) would only add tasks.
        .config("spark.sql.shuffle.partitions", "4")
        # The same for rebuilding a snapshot from the Delta log (default 50).
        .config("spark.databricks.delta.snapshotPartitions", "2")
        .config("spark.jars.ivy", str(IVY_DIR))
        # Local mode needs no UI and no listener off the loopback.
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
    )
    # Read by the JVM when it starts: every Spark listener (the driver's RPC and block manager)
    # on the loopback, not on the address the host name resolves to.
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    spark = configure_spark_with_delta_pip(builder).getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark


def table_path(lake: str, table: str = "events") -> str:
    """Where a table of the lake lives: a directory or a URI (s3://bucket/prefix) under it."""
    return lake.rstrip("/") + "/" + table


def read_events(spark: SparkSession, lake: str) -> DataFrame:
    """The `events` table as it is now (a snapshot: later commits are not seen)."""
    return spark.read.format("delta").load(table_path(lake))


def per_day(events: DataFrame) -> DataFrame:
    """Rows and distinct `event_id`s per `event_date` (equal: the lake keeps one row per id)."""
    return (
        events.groupBy("event_date")
        .agg(F.count("*").alias("events"), F.countDistinct("event_id").alias("distinct_ids"))
        .orderBy("event_date")
    )


def funnel(events: DataFrame, days: int = 7) -> DataFrame:
    """The checkout funnel of docs/analysis.md over the last `days` days: installs that viewed a
    screen, then added to the cart, then checked out, each step after the one before (by
    `event_time`). Filtering on `event_date` prunes whole partitions."""

    def first(name: str):
        return F.min(F.when(F.col("name") == name, F.col("event_time")))

    firsts = (
        events.where(F.col("event_date") >= F.date_sub(F.current_date(), days))
        .groupBy("install_id")
        .agg(first("screen_view").alias("viewed"), first("add_to_cart").alias("added"),
             first("checkout").alias("paid"))
    )
    added = F.col("added") >= F.col("viewed")
    paid = (F.col("paid") >= F.col("added")) & added
    return firsts.agg(
        F.count("viewed").alias("viewed"),
        F.count(F.when(added, 1)).alias("added_to_cart"),
        F.count(F.when(paid, 1)).alias("checked_out"),
    )


def events_stream(spark: SparkSession, lake: str, **options: str) -> DataFrame:
    """`events` as a stream: the rows of the table when the query starts, then the rows of every
    later commit, each once (the lake only appends). `options` go to the Delta source, e.g.
    `startingVersion="latest"` to skip the rows already there, `maxFilesPerTrigger`."""
    return spark.readStream.format("delta").options(**options).load(table_path(lake))


def follow(spark: SparkSession, lake: str, seconds: float) -> None:
    """Prints the rows each new commit of `events` adds, per event name, for `seconds`."""

    def show(batch: DataFrame, batch_id: int) -> None:
        counts = batch.groupBy("event_date", "name").count().orderBy("event_date", "name").collect()
        print(f"micro-batch {batch_id}: {sum(r['count'] for r in counts)} new events", flush=True)
        for r in counts:
            print(f"  {r['event_date']}  {r['name']:<20} {r['count']}", flush=True)

    # A production stream keeps its checkpoint beside its output (on S3, say) so a restart
    # resumes where it was; this one is thrown away with the run.
    with tempfile.TemporaryDirectory(prefix="tern-spark-") as checkpoint:
        query = (
            events_stream(spark, lake, startingVersion="latest")
            .writeStream.foreachBatch(show)
            .option("checkpointLocation", checkpoint)
            .trigger(processingTime="2 seconds")
            .start()
        )
        try:
            query.awaitTermination(seconds)
        finally:
            query.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lake", required=True, help="the lake: a directory or an s3:// URI")
    parser.add_argument("--days", type=int, default=7, help="the funnel's window in days")
    parser.add_argument("--follow", type=float, default=0, metavar="SECONDS",
                        help="then print the rows new commits add, for this long")
    args = parser.parse_args()

    spark = spark_session()
    started = time.monotonic()
    events = read_events(spark, args.lake)
    print("Events per day:")
    per_day(events).show(1000, truncate=False)
    print(f"Checkout funnel, last {args.days} days:")
    funnel(events, args.days).show(truncate=False)
    print(f"({time.monotonic() - started:.1f} s)")
    if args.follow > 0:
        print(f"Following new commits for {args.follow:g} s:", flush=True)
        follow(spark, args.lake, args.follow)
    spark.stop()


if __name__ == "__main__":
    main()
