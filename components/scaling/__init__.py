"""Planning before spending: `plan` (parameters, FLOPs, memory, time and cost of a config)."""
