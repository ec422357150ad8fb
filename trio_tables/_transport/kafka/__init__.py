"""The Kafka transport: kafka-python keeps group membership, commits and produces;
librdkafka (confluent-kafka) fetches. See docs/architecture.md."""
