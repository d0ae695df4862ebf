"""Planning before spending: `plan` (parameters, FLOPs, memory, time and cost of a config) and
`fit` (scaling laws from sweep runs: compute-optimal size and tokens for a budget)."""
