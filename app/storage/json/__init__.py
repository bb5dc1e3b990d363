"""The durable JSON store: files, a write-ahead log, an index of runs and run journals."""
