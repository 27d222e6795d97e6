#!/usr/bin/env python3
"""What a reader weir did not write sees in a Kafka topic.

    kafka_check.py read BOOTSTRAP TOPIC [--timeout SECONDS]

Reads every partition of TOPIC from the beginning with confluent-kafka
(librdkafka under Python, not weir's client code) and
isolation.level=read_committed, so records of aborted or still open
transactions are never seen, until each partition reports its end (the last
stable offset) or reaches the high watermark it had when reading started:
a consistent snapshot even while a writer goes on. Prints one line per
record, partition by partition in offset order:

    PARTITION OFFSET KEY VALUE

KEY and VALUE are hex (`-` for a missing key). Exits non-zero, naming the
partitions, if the end is not reached within the timeout (default 60 s).
"""

import argparse
import sys
import time

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition


def read(bootstrap, topic, timeout):
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "weir-test-checker",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
        }
    )
    deadline = time.monotonic() + timeout
    metadata = None
    while time.monotonic() < deadline:
        metadata = consumer.list_topics(topic, timeout=10)
        t = metadata.topics.get(topic)
        if t is not None and t.error is None and t.partitions:
            break
        time.sleep(0.2)
    else:
        sys.exit(f"topic {topic} not found at {bootstrap}")
    partitions = sorted(metadata.topics[topic].partitions)
    high = {
        p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
        for p in partitions
    }
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    records = {p: [] for p in partitions}
    pending = {p for p in partitions if high[p] > 0}
    while pending:
        if time.monotonic() > deadline:
            sys.exit(f"{topic}: partitions {sorted(pending)} did not reach their end in {timeout} s")
        message = consumer.poll(0.5)
        if message is None:
            continue
        if message.error():
            if message.error().code() == KafkaError._PARTITION_EOF:
                pending.discard(message.partition())
                continue
            sys.exit(f"{topic}: {message.error()}")
        if message.partition() not in pending:
            continue
        records[message.partition()].append(message)
        if message.offset() >= high[message.partition()] - 1:
            pending.discard(message.partition())
    consumer.close()
    out = sys.stdout
    for p in partitions:
        for m in records[p]:
            key = m.key().hex() if m.key() is not None else "-"
            value = (m.value() or b"").hex()
            out.write(f"{p} {m.offset()} {key} {value}\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("read")
    r.add_argument("bootstrap")
    r.add_argument("topic")
    r.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args()
    if args.command == "read":
        read(args.bootstrap, args.topic, args.timeout)


if __name__ == "__main__":
    main()
