"""How runs reach an executor: threads of this process now (local.py); queue-backed workers later."""
