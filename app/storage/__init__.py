"""Where runs and state are kept: the Store interface, the memory store and the JSON store."""
