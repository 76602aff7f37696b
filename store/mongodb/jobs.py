"""Background jobs (exports, imports) and their progress."""

from __future__ import annotations

from typing import Any

from leadstream.store.jobs import job_changes, new_job
from leadstream.store.mongodb.connection import MongoConnection
from leadstream.store.mongodb.documents import record_doc, record_from_doc
from leadstream.store.records import Job


class MongoJobs(MongoConnection):
    """Jobs (`jobs`), with a limit of active jobs per user."""

    async def create_job(self, org: str, user: str, kind: str, params: dict[str, Any]) -> Job:
        job = new_job(org, user, kind, params)
        await self._collection("jobs").insert_one(record_doc(job))
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
        await self._collection("jobs").update_one({"_id": job_id}, {"$set": changed})

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
        # Insert, then count the user's active jobs, this one included; over the
        # limit, remove it. The last of racing calls to count sees every job
        # kept, so no more than `limit` are kept (racers may all give up: fine).
        job = await self.create_job(org, user, kind, params)
        jobs = self._collection("jobs")
        active = await jobs.count_documents(
            {
                "org": org,
                "user": user,
                "status": {"$in": ["queued", "running"]},
                "updated_at": {"$gte": active_since},
            }
        )
        if active <= limit:
            return job
        await jobs.delete_one({"_id": job.id})
        return None

    async def get_job(self, org: str, job_id: str) -> Job | None:
        doc = await self._collection("jobs").find_one({"_id": job_id, "org": org})
        return record_from_doc(Job, doc) if doc else None
