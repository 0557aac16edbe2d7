"""Benchmarks (layer 5): the timers (`timing`) and one module per benchmark: the compiled
update's throughput and the sweep comparison (`train`), its growth with size (`scaling`), its
matmuls timed alone (`matmul`), GAE and log-probs (`core`), and one RL update of a pretrained
model in float32 and bfloat16 (`llm`)."""
