"""Benchmarks (layer 4): the timers (`timing`) and one module per benchmark: the compiled
update's throughput and the sweep comparison (`train`), its growth with size (`scaling`), its
matmuls timed alone (`matmul`), and GAE and log-probs (`core`)."""
