//! The root package only hosts the repository-level tests (`tests/`) and benchmarks (`benches/`).
