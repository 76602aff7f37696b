"""orjson as python-socketio's JSON module.

python-socketio calls `json.dumps(obj, separators=...)` and expects `str`;
orjson takes no such keyword and returns bytes, hence this thin adapter.
"""

from __future__ import annotations

from typing import Any

import orjson


def dumps(obj: Any, **_: Any) -> str:
    return orjson.dumps(obj).decode()


def loads(data: str | bytes, **_: Any) -> Any:
    return orjson.loads(data)
