//! End-to-end tests and benchmarks for jfs live in tests/ and benches/.
