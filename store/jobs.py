"""Jobs as the store keeps them: a new queued job and what an update
changes, built once for every backend (which only write them)."""

from __future__ import annotations

from typing import Any, Literal

from leadstream.store.records import Job, iso_now, new_id


def new_job(org: str, user: str, kind: str, params: dict[str, Any]) -> Job:
    """A queued job of `kind` (`export` or `import`) with nothing done yet."""
    now = iso_now()
    job_kind: Literal["export", "import"] = kind  # type: ignore[assignment]
    return Job(new_id("jb"), org, user, job_kind, "queued", params, 0, 0, None, None, now, now)


def job_changes(
    *,
    status: str | None = None,
    done: int | None = None,
    total: int | None = None,
    result: dict[str, Any] | None = None,
    error: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The fields an `update_job` call sets, by column name: those given
    (not None) and `updated_at` (now)."""
    fields: dict[str, Any] = {
        "status": status,
        "done": done,
        "total": total,
        "result": result,
        "error": error,
    }
    changed = {column: value for column, value in fields.items() if value is not None}
    changed["updated_at"] = iso_now()
    return changed
