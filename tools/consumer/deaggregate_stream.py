"""Reads a whole Kinesis stream with boto3 and de-aggregates it with the `aws-kinesis-agg`
package (the AWS library for KPL aggregated records), printing one JSON line per user record:
an independent check of the collector's aggregation mode.

    python tools/consumer/deaggregate_stream.py --endpoint URL --stream NAME
"""

import argparse
import base64
import json
import sys

from aws_kinesis_agg.deaggregator import iter_deaggregate_records

from tern_consumer import kinesis_client


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--stream", required=True)
    args = parser.parse_args()
    client = kinesis_client(args.endpoint)
    aggregated = 0
    for shard in client.list_shards(StreamName=args.stream)["Shards"]:
        iterator = client.get_shard_iterator(
            StreamName=args.stream, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        while iterator:
            page = client.get_records(ShardIterator=iterator, Limit=10_000)
            records = page["Records"]
            if not records:
                break
            aggregated += len(records)
            for user in iter_deaggregate_records(records, data_format="Boto3"):
                data = user["kinesis"]["data"]
                # User records unpacked from an aggregate come base64-encoded (as Lambda delivers
                # them); a record that was not aggregated comes back as it was read.
                if user["kinesis"].get("aggregated"):
                    data = base64.b64decode(data)
                print(json.dumps(json.loads(data)))
            iterator = page.get("NextShardIterator")
    print(f"{aggregated} Kinesis records", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
