"""ragkb offline evaluation and benchmarks: scoring retrieval on BEIR data, timing the pipeline."""
