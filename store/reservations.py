"""How much of an org's daily budget a reservation may hold: the arithmetic
both store backends apply inside their atomic update of the usage row.

A running reply holds part of the token / USD budget, a running search part
of the lookup credits, so that replies and searches that start together (on
one instance or several) cannot all spend what only one of them may.
"""

from __future__ import annotations


def usage_grant(
    row: tuple[int, float, int, float],
    tokens: int,
    cost_usd: float,
    max_tokens: int | None,
    max_usd: float | None,
) -> tuple[int, float] | None:
    """(tokens, USD) to hold, given the row's (used tokens, used USD, held
    tokens, held USD): what was asked, clamped to what is left; None when
    used + held already reach a limit.
    """
    used_tokens, used_usd, held_tokens, held_usd = row
    if max_tokens is not None and used_tokens + held_tokens >= max_tokens:
        return None
    if max_usd is not None and used_usd + held_usd >= max_usd:
        return None
    if max_tokens is not None:
        tokens = min(tokens, max_tokens - used_tokens - held_tokens)
    if max_usd is not None:
        cost_usd = min(cost_usd, max_usd - used_usd - held_usd)
    return tokens, cost_usd


def credits_grant(row: tuple[int, int], credits: int, max_credits: int | None) -> int:
    """Lookup credits to hold, given the row's (used, held): what was asked,
    clamped to what is left of `max_credits` (None: no cap)."""
    used, held = row
    if max_credits is None:
        return credits
    return max(0, min(credits, max_credits - used - held))
