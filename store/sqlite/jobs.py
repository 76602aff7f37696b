"""Export and import jobs on SQLite (`base.JobStore`)."""

from __future__ import annotations

import sqlite3
from typing import Any

import orjson

from leadstream.store.jobs import job_changes, new_job
from leadstream.store.records import Job
from leadstream.store.sqlite.database import SqliteDatabase
from leadstream.store.sqlite.rows import json_text

JOB_COLUMNS = (
    "id, org, user_id, kind, status, params, done, total, result, error, created_at, updated_at"
)
JSON_COLUMNS = frozenset({"params", "result", "error"})


class SqliteJobs:
    """The job part of `SqliteStore` (a mixin: it uses the store's `database`)."""

    database: SqliteDatabase

    async def create_job(self, org: str, user: str, kind: str, params: dict[str, Any]) -> Job:
        job = new_job(org, user, kind, params)
        await self.database.write(
            lambda db: db.execute(
                f"INSERT INTO jobs ({JOB_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", _job_row(job)
            )
        )
        return job

    async def update_job(
        self,
        job_id: str,
        *,
        status: str | None = None,
        done: int | None = None,
        total: int | None = None,
        result: dict[str, Any] | None = None,
        error: dict[str, Any] | None = None,
    ) -> None:
        changed = job_changes(status=status, done=done, total=total, result=result, error=error)
        sets = ", ".join(f"{column} = ?" for column in changed)
        params = [
            json_text(value) if column in JSON_COLUMNS else value
            for column, value in changed.items()
        ]
        await self.database.write(
            lambda db: db.execute(f"UPDATE jobs SET {sets} WHERE id = ?", [*params, job_id])
        )

    async def create_job_within_limit(
        self,
        org: str,
        user: str,
        kind: str,
        params: dict[str, Any],
        *,
        limit: int,
        active_since: str,
    ) -> Job | None:
        job = new_job(org, user, kind, params)

        def insert(db: sqlite3.Connection) -> bool:
            # One statement: the count and the insert cannot interleave with another's.
            cursor = db.execute(
                f"INSERT INTO jobs ({JOB_COLUMNS}) SELECT ?,?,?,?,?,?,?,?,?,?,?,? "
                "WHERE (SELECT COUNT(*) FROM jobs WHERE org = ? AND user_id = ? "
                "AND status IN ('queued', 'running') AND updated_at >= ?) < ?",
                (*_job_row(job), org, user, active_since, limit),
            )
            return cursor.rowcount == 1

        return job if await self.database.write(insert) else None

    async def get_job(self, org: str, job_id: str) -> Job | None:
        row = await self.database.read(
            lambda db: db.execute(
                f"SELECT {JOB_COLUMNS} FROM jobs WHERE org = ? AND id = ?", (org, job_id)
            ).fetchone()
        )
        if row is None:
            return None
        return Job(
            row[0],
            row[1],
            row[2],
            row[3],
            row[4],
            orjson.loads(row[5]),
            row[6],
            row[7],
            orjson.loads(row[8]) if row[8] else None,
            orjson.loads(row[9]) if row[9] else None,
            row[10],
            row[11],
        )


def _job_row(job: Job) -> tuple[Any, ...]:
    """The `JOB_COLUMNS` of a job's row."""
    return (
        job.id,
        job.org,
        job.user,
        job.kind,
        job.status,
        json_text(job.params),
        job.done,
        job.total,
        json_text(job.result) if job.result is not None else None,
        json_text(job.error) if job.error is not None else None,
        job.created_at,
        job.updated_at,
    )
