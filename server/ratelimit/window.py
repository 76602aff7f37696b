"""The sliding-window counter's arithmetic, and the decision it leads to.

A limit of n requests per window w keeps two fixed windows' counts. At
`elapsed` seconds into the current fixed window, the sliding window still
overlaps `(w - elapsed) / w` of the previous one, so its estimated count is
`previous * (w - elapsed) / w + current`. Both backends read counts with this
(the Redis one in Lua, the same formula); `decide` turns the readings of all
rules of a request into one `RateLimitDecision`, with the `RateLimit-*`
numbers of the limit closest to exhaustion.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from leadstream.server.ratelimit.policy import Limit, Rule


class WindowCount(NamedTuple):
    """A backend's reading of one rule, before this request was counted.

    :param previous: requests in the previous fixed window.
    :param current: requests in the current fixed window.
    :param elapsed_s: time since the current fixed window began.
    :param fits: whether this request fits the limit.
    """

    previous: int
    current: int
    elapsed_s: float
    fits: bool


def weighted_count(previous: float, current: float, elapsed_s: float, window_s: float) -> float:
    """Requests in the sliding window ending now, the previous window's share
    assumed spread evenly over it."""
    return previous * (window_s - elapsed_s) / window_s + current


@dataclass(frozen=True, slots=True)
class RateLimitDecision:
    """The answer to one check, with what a `429` and the `RateLimit-*` headers need.

    :param allowed: whether the request may proceed.
    :param limit: requests allowed in the window of the reported limit.
    :param remaining: requests left in it after this one.
    :param reset_s: seconds until that limit's quota is whole again, without more traffic.
    :param retry_after_s: seconds until this request would be allowed (0 when allowed).
    :param scope: the scope of the reported limit (`user`, `org`, `ip`,
        `anonymous_ip`), or None when nothing was limited (disabled, exempt, failed open).
    :param window_s: the window of the reported limit.
    :param failed_open: allowed unchecked because the backend failed.
    """

    allowed: bool
    limit: int
    remaining: int
    reset_s: float
    retry_after_s: float
    scope: str | None = None
    window_s: float = 0.0
    failed_open: bool = False

    def headers(self) -> dict[str, str]:
        """The `RateLimit-*` headers, and `Retry-After` when refused (none when unlimited)."""
        if self.scope is None:
            return {}
        headers = {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(math.ceil(self.reset_s)),
        }
        if not self.allowed:
            headers["Retry-After"] = str(self.retry_after_seconds)
        return headers

    @property
    def retry_after_seconds(self) -> int:
        """`retry_after_s` as the whole seconds of `Retry-After` (at least 1)."""
        return max(1, math.ceil(self.retry_after_s))

    @property
    def message(self) -> str:
        """Human text for the error body or the error ack."""
        return (
            f"too many requests ({self.scope} limit: {self.limit} per {self.window_s:g} s); "
            f"retry in {self.retry_after_seconds} s"
        )

    def error(self) -> dict[str, str]:
        """`{"code": "rate_limited", "message"}`, as PROTOCOL.md's REST body and acks carry."""
        return {"code": "rate_limited", "message": self.message}


UNLIMITED = RateLimitDecision(allowed=True, limit=0, remaining=0, reset_s=0, retry_after_s=0)
FAILED_OPEN = RateLimitDecision(
    allowed=True, limit=0, remaining=0, reset_s=0, retry_after_s=0, failed_open=True
)


def decide(rules: Sequence[Rule], counts: Sequence[WindowCount], cost: int) -> RateLimitDecision:
    """Turn a backend's readings into a decision reporting the most pressing limit:
    on a refusal the one refusing longest, else the one with the fewest requests left.
    """
    if not rules:
        return UNLIMITED
    allowed = all(count.fits for count in counts)
    if allowed:
        # Fewest left after this request; on a tie, the one taking longest to refill.
        pick = min(
            range(len(rules)),
            key=lambda i: (_left(rules[i].limit, counts[i]), -rules[i].limit.window_s),
        )
    else:
        pick = max(
            (i for i in range(len(rules)) if not counts[i].fits),
            key=lambda i: _wait_to_fit(rules[i].limit, counts[i], cost),
        )
    return _evaluate(rules[pick], counts[pick], cost, counted=allowed)


def _left(limit: Limit, count: WindowCount) -> float:
    estimate = weighted_count(count.previous, count.current, count.elapsed_s, limit.window_s)
    return limit.requests - estimate


def _evaluate(rule: Rule, count: WindowCount, cost: int, *, counted: bool) -> RateLimitDecision:
    limit, window = rule.limit.requests, rule.limit.window_s
    previous, current, elapsed = count.previous, count.current, count.elapsed_s
    estimate = weighted_count(previous, current, elapsed, window)
    if counted:
        estimate += cost
        current += cost
    # Quota whole again: the previous window's share runs out at this window's
    # end; the current window's only at the end of the next one.
    if current > 0:
        reset_s = 2 * window - elapsed
    elif previous > 0:
        reset_s = window - elapsed
    else:
        reset_s = 0.0
    retry_after_s = 0.0 if count.fits else _wait_to_fit(rule.limit, count, cost)
    return RateLimitDecision(
        allowed=count.fits,
        limit=limit,
        remaining=max(0, math.floor(limit - estimate + 1e-9)),
        reset_s=reset_s,
        retry_after_s=retry_after_s,
        scope=rule.scope,
        window_s=window,
    )


def _wait_to_fit(limit: Limit, count: WindowCount, cost: int) -> float:
    """Seconds until `cost` more requests fit, if no other request is counted meanwhile."""
    n, window = limit.requests, limit.window_s
    previous, current, elapsed = count.previous, count.current, count.elapsed_s
    if cost > n:
        return 2 * window - elapsed
    if current + cost <= n and previous > 0:
        # Within this window the previous window's share shrinks at previous/window per second.
        excess = weighted_count(previous, current, elapsed, window) + cost - n
        return max(0.0, excess * window / previous)
    # Only in the next window, as the current count becomes the shrinking previous one.
    return (window - elapsed) + window * max(0.0, 1 - (n - cost) / max(current, 1))
