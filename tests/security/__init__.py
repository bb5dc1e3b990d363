"""Attacks on a real run.py, replayed: each test asserts the property the attack broke (DESIGN section 10)."""
