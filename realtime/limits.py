"""Per-connection limits: events per second (a token bucket per connection),
and connections per user and per client address on this instance. Packet size
is bounded by the transport (`max_http_buffer_size`), which closes that one
connection.
"""

from __future__ import annotations

from collections import Counter

from leadstream.pacing import TokenBucket


class ConnectionLimits:
    """What one connection (and one user) may do.

    :param events_per_s: sustained client events per second per connection.
    :param burst: events a connection may send at once.
    :param connections_per_user: open connections per user on this instance.
    :param connections_per_ip: open connections per client address on this
        instance, whoever the users [no limit].
    """

    def __init__(
        self,
        *,
        events_per_s: float,
        burst: int,
        connections_per_user: int,
        connections_per_ip: int | None = None,
    ) -> None:
        self.events_per_s = events_per_s
        self.burst = burst
        self.connections_per_user = connections_per_user
        self.connections_per_ip = connections_per_ip
        self._buckets: dict[str, TokenBucket] = {}
        self._users: Counter[tuple[str, str]] = Counter()
        self._user_of: dict[str, tuple[str, str]] = {}
        self._ips: Counter[str] = Counter()
        self._ip_of: dict[str, str] = {}

    def admit(self, sid: str, org: str, user: str, ip: str | None = None) -> str | None:
        """Register a new connection; None when admitted, else why not (a message)."""
        key = (org, user)
        if self._users[key] >= self.connections_per_user:
            return f"at most {self.connections_per_user} connections per user"
        if ip is not None and self.connections_per_ip is not None:
            if self._ips[ip] >= self.connections_per_ip:
                return f"at most {self.connections_per_ip} connections per address"
            self._ips[ip] += 1
            self._ip_of[sid] = ip
        self._users[key] += 1
        self._user_of[sid] = key
        self._buckets[sid] = TokenBucket(self.events_per_s, burst=self.burst)
        return None

    def is_admitted(self, sid: str) -> bool:
        return sid in self._user_of

    def release(self, sid: str) -> None:
        key = self._user_of.pop(sid, None)
        if key is not None:
            _decrement(self._users, key)
        ip = self._ip_of.pop(sid, None)
        if ip is not None:
            _decrement(self._ips, ip)
        self._buckets.pop(sid, None)

    def allow_event(self, sid: str) -> bool:
        """Take one token from the connection's bucket; False when it is empty."""
        bucket = self._buckets.get(sid)
        if bucket is None:
            return True  # not admitted through connect (cannot happen in practice)
        return bucket.try_take()

    def connections(self, org: str, user: str) -> int:
        return self._users.get((org, user), 0)

    def connections_from(self, ip: str) -> int:
        return self._ips.get(ip, 0)


def _decrement(counter: Counter, key: object) -> None:
    counter[key] -= 1
    if counter[key] <= 0:
        del counter[key]
