#!/usr/bin/env python3
"""Create a topic, for brokers that do not create topics on first use.

    python create_topic.py TOPIC [PARTITIONS [REPLICATION_FACTOR]]   # brokers from $KAFKA_BOOTSTRAP_SERVERS

Defaults: 3 partitions, replication factor 1. Fails if the topic exists.
"""

import os
import sys

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic


def main():
    if not 2 <= len(sys.argv) <= 4:
        sys.exit(f"usage: {sys.argv[0]} TOPIC [PARTITIONS [REPLICATION_FACTOR]]")
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or sys.exit("KAFKA_BOOTSTRAP_SERVERS is not set")
    topic = sys.argv[1]
    partitions = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    replication = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(topic, partitions, replication)], operation_timeout=30, request_timeout=30)
    try:
        futures[topic].result(timeout=60)
    except KafkaException as e:
        sys.exit(f"creating topic {topic} on {bootstrap}: {e.args[0].str()}")
    print(f"created topic {topic} with {partitions} partitions, replication factor {replication}")


if __name__ == "__main__":
    main()
