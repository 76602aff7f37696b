"""The people directory: who a search can find (the local lead provider)."""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator, Iterable

from pymongo.errors import BulkWriteError

from leadstream.store.mongodb.connection import MongoConnection
from leadstream.store.mongodb.documents import DUPLICATE_KEY, Doc, person_doc, person_from_doc
from leadstream.store.records import PeopleQuery, Person


class MongoDirectory(MongoConnection):
    """Directory people (`people`), found by title words, industry, company,
    location, seniority and keywords."""

    async def count_people(self) -> int:
        return await self._collection("people").count_documents({})

    async def add_people(self, people: Iterable[Person]) -> int:
        """Insert directory entries (existing person ids are left alone)."""
        docs = [person_doc(p) for p in people]
        added = 0
        for start in range(0, len(docs), 1000):
            part = docs[start : start + 1000]
            try:
                added += len(
                    (await self._collection("people").insert_many(part, ordered=False)).inserted_ids
                )
            except BulkWriteError as error:
                details = error.details
                if any(e.get("code") != DUPLICATE_KEY for e in details.get("writeErrors", [])):
                    raise
                added += details.get("nInserted", 0)
        return added

    async def stream_people(
        self, query: PeopleQuery, *, limit: int, chunk_size: int
    ) -> AsyncGenerator[list[Person], None]:
        """Matching directory people, at most `limit`, a chunk per batch the
        server sends (`batch_size` is the chunk size)."""
        if limit <= 0:  # a MongoDB limit of 0 means none
            return
        cursor = (
            self._collection("people")
            .find(_people_query(query))
            .limit(limit)
            .batch_size(chunk_size)
        )
        try:
            chunk: list[Person] = []
            async for doc in cursor:
                chunk.append(person_from_doc(doc))
                if len(chunk) == chunk_size:
                    yield chunk
                    chunk = []
            if chunk:
                yield chunk
        finally:
            await cursor.close()

    async def get_person(self, person_id: str) -> Person | None:
        doc = await self._collection("people").find_one({"_id": person_id})
        return person_from_doc(doc) if doc else None

    async def find_people(
        self, *, name: str | None, company: str | None, linkedin: str | None, limit: int = 5
    ) -> list[Person]:
        query: Doc = {}
        if linkedin:
            query["linkedin"] = linkedin.rstrip("/")
        if name:
            query["name_key"] = {"$regex": "^" + re.escape(name.casefold())}
        if company:
            query["company_key"] = {"$regex": "^" + re.escape(company.casefold())}
        if not query or limit <= 0:
            return []
        docs = await self._collection("people").find(query).limit(limit).to_list(None)
        return [person_from_doc(doc) for doc in docs]


def _people_query(q: PeopleQuery) -> Doc:
    clauses: list[Doc] = []
    for word in q.title_terms:  # a word prefix: title_key is " word word "
        clauses.append({"title_key": {"$regex": " " + re.escape(word)}})
    if q.industry:
        clauses.append({"industry": q.industry})
    if q.company:
        clauses.append({"company_key": {"$regex": "^" + re.escape(q.company.casefold())}})
    if q.location:
        clauses.append({"location": {"$regex": re.escape(q.location), "$options": "i"}})
    if q.seniority:
        clauses.append({"seniority": q.seniority})
    for word in q.keywords:
        pattern = {"$regex": re.escape(word), "$options": "i"}
        clauses.append({"$or": [{"title": pattern}, {"company": pattern}]})
    if q.has_phone:
        clauses.append({"has_phone": True})
    if q.has_email:
        clauses.append({"has_email": True})
    return {"$and": clauses} if clauses else {}
