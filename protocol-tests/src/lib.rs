//! Shared helpers for the real-Kafka tests.
