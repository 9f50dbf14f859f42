"""Benchmarks that print tables: accuracy on the reference zoo, mapping speed, conversion I/O."""
