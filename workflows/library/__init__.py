"""Plain functions that declarative workflows call with the ``python`` step; no Flask, no app."""
