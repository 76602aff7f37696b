"""The people directory on SQLite (`base.DirectoryStore`)."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncGenerator, Iterable, Iterator
from typing import Any

from leadstream.store.records import PeopleQuery, Person
from leadstream.store.sqlite.database import SqliteDatabase
from leadstream.store.sqlite.rows import PEOPLE_COLUMNS, json_text, like, person_from_row
from leadstream.store.titles import title_key


class SqliteDirectory:
    """The directory part of `SqliteStore` (a mixin: it uses the store's `database`)."""

    database: SqliteDatabase

    async def count_people(self) -> int:
        return await self.database.read(
            lambda db: db.execute("SELECT count(*) FROM people").fetchone()[0]
        )

    async def add_people(self, people: Iterable[Person]) -> int:
        """Insert directory entries (existing person ids are left alone)."""
        rows = [
            (
                p.person_id,
                p.name,
                p.title,
                title_key(p.title),
                p.seniority,
                p.department,
                p.company,
                p.industry,
                p.location,
                json_text(p.emails),
                json_text(p.phones),
                p.linkedin,
                int(bool(p.emails)),
                int(bool(p.phones)),
            )
            for p in people
        ]

        def insert(db: sqlite3.Connection) -> int:
            before = db.total_changes
            db.executemany(
                "INSERT OR IGNORE INTO people (person_id, name, title, title_key, seniority, "
                "department, company, industry, location, emails, phones, linkedin, has_email, "
                "has_phone) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                rows,
            )
            return db.total_changes - before

        return await self.database.write(insert)

    def stream_people(
        self, query: PeopleQuery, *, limit: int, chunk_size: int
    ) -> AsyncGenerator[list[Person], None]:
        """Matching directory people, at most `limit`, in chunks as SQLite finds them."""
        where, params = people_where(query)
        sql = f"SELECT {PEOPLE_COLUMNS} FROM people WHERE {where} LIMIT ?"

        def produce(db: sqlite3.Connection) -> Iterator[list[Person]]:
            cursor = db.execute(sql, [*params, limit])
            while rows := cursor.fetchmany(chunk_size):
                yield [person_from_row(row) for row in rows]

        return self.database.stream(produce)

    async def get_person(self, person_id: str) -> Person | None:
        row = await self.database.read(
            lambda db: db.execute(
                f"SELECT {PEOPLE_COLUMNS} FROM people WHERE person_id = ?", (person_id,)
            ).fetchone()
        )
        return person_from_row(row) if row else None

    async def find_people(
        self, *, name: str | None, company: str | None, linkedin: str | None, limit: int = 5
    ) -> list[Person]:
        clauses, params = [], []
        if linkedin:
            clauses.append("linkedin = ?")
            params.append(linkedin.rstrip("/"))
        if name:
            clauses.append("name LIKE ? ESCAPE '\\'")
            params.append(like(name, prefix=True))
        if company:
            clauses.append("company LIKE ? ESCAPE '\\'")
            params.append(like(company, prefix=True))
        if not clauses:
            return []
        sql = f"SELECT {PEOPLE_COLUMNS} FROM people WHERE {' AND '.join(clauses)} LIMIT ?"
        rows = await self.database.read(lambda db: db.execute(sql, [*params, limit]).fetchall())
        return [person_from_row(row) for row in rows]


def people_where(q: PeopleQuery) -> tuple[str, list[Any]]:
    """The WHERE clause and parameters of the directory people matching `q`."""
    clauses, params = ["1"], []
    for word in q.title_terms:
        clauses.append("title_key LIKE ? ESCAPE '\\'")
        params.append("% " + like(word, prefix=True))
    if q.industry:
        clauses.append("industry = ?")
        params.append(q.industry)
    if q.company:
        clauses.append("company LIKE ? ESCAPE '\\'")
        params.append(like(q.company, prefix=True))
    if q.location:
        clauses.append("location LIKE ? ESCAPE '\\'")
        params.append(like(q.location))
    if q.seniority:
        clauses.append("seniority = ?")
        params.append(q.seniority)
    for word in q.keywords:
        clauses.append("(title LIKE ? ESCAPE '\\' OR company LIKE ? ESCAPE '\\')")
        params += [like(word), like(word)]
    if q.has_phone:
        clauses.append("has_phone = 1")
    if q.has_email:
        clauses.append("has_email = 1")
    return " AND ".join(clauses), params
