"""The in-process transport: a broker in memory with Kafka's semantics (groups,
commits, transactions), for tests and single-process apps."""
