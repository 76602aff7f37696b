"""Room names. Only the server puts a connection in a room, from its token.

Org and user ids are restricted to a safe alphabet (no ':'), see
`server.auth.IDENTIFIER`, so these names cannot collide across tenants.
"""


def user_room(org: str, user: str) -> str:
    """Every connection of one user: chat, search batches and job events."""
    return f"user:{org}:{user}"


def org_feed_room(org: str) -> str:
    """Connections of an org that called `leads:subscribe`: `leads:changes`."""
    return f"org:{org}"
