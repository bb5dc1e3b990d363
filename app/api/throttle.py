"""Failed authentications per client address: a sliding window that locks an address out for a while.

After ``limit`` failures from one address within ``window`` seconds, that
address is locked out until the oldest of them is ``window`` seconds old, so
a guesser gets at most ``limit`` tries a minute. IPv6 clients are counted per
/64 network, since one host commonly holds a whole /64. The table holds at
most ``max_addresses`` addresses (the least recently failing are forgotten
first), so a client with many addresses cannot grow it without limit.
"""

from __future__ import annotations

import ipaddress
import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable


def client_key(address: str | None) -> str:
    """The address failures are counted under: an IPv4 address, or the /64 network of an IPv6 one."""
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:
        return address or "unknown"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


class FailureLimiter:
    """Counts failed authentications per address; thread-safe."""

    def __init__(self, limit: int = 10, window: float = 60.0, max_addresses: int = 10_000,
                 clock: Callable[[], float] = time.monotonic):
        if limit < 1 or window <= 0 or max_addresses < 1:
            raise ValueError(f"limit, window and max_addresses must be positive, "
                             f"got {limit}, {window}, {max_addresses}")
        self.limit = limit
        self.window = window
        self.max_addresses = max_addresses
        self._clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def retry_after(self, address: str | None) -> int | None:
        """Whole seconds until ``address`` may try again; None when it is not locked out."""
        key = client_key(address)
        with self._lock:
            now = self._clock()
            times = self._failures.get(key)
            if times is None:
                return None
            self._expire(key, times, now)
            if len(times) < self.limit:
                return None
            return max(1, math.ceil(times[0] + self.window - now))

    def failed(self, address: str | None) -> None:
        """Count one failed authentication from ``address``."""
        key = client_key(address)
        with self._lock:
            now = self._clock()
            times = self._failures.pop(key, None)
            if times is None:
                # Only the newest ``limit`` times matter, so each address costs a bounded deque.
                times = deque(maxlen=self.limit)
            times.append(now)
            self._failures[key] = times  # most recently failing last
            while len(self._failures) > self.max_addresses:
                self._failures.popitem(last=False)

    def __len__(self) -> int:
        return len(self._failures)

    def _expire(self, key: str, times: deque[float], now: float) -> None:
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self._failures[key]
