"""The collections and their indexes, made by `create_schema` at `open()`
(idempotent: same name, same keys).

Each lead list query follows the ESR rule (equality, sort, range): equality
on `org` (and on `contact`, a 0-3 mask of email=1 / phone=2, when
`hasEmail` or `hasPhone` filters: an `$in` of mask values, which the server
walks as one merge-sorted scan per value), then the sort key and `_id`, and
the cursor's range on that same sort key. So every sort of
`store.cursors.SORTS` has an index `(org, key, _id)` and one
`(org, contact, key, _id)`. Name and company sorts use casefolded
`name_key` and `company_key`.

One person, one lead (`store.lead_identity`): each lead carries its
`identity_keys` (normalised emails, phones, LinkedIn URL), a multikey index
`(org, identity_keys, source)` finds the leads a bulk save may merge into,
and `create_schema` fills the keys of leads written before they existed.

Sharding: leads are ready to be sharded on the hashed org,
`sh.shardCollection("<db>.leads", {org: "hashed"})`: the `org_hashed`
index exists, the unique (org, source, person_id) index starts with the
shard key field, and every lead query and write names its org, so each one
goes to a single shard. `changes` can be sharded the same way (its unique
index is (org, version)).
"""

from __future__ import annotations

import contextlib

from pymongo import IndexModel, UpdateOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import CollectionInvalid

from leadstream.store.cursors import SORTS
from leadstream.store.lead_identity import identity_keys
from leadstream.store.mongodb.documents import Doc

SORT_KEYS = sorted({key for key, _ in SORTS.values()})
IDENTITY_INDEX = "org_identity_keys"

COLLECTIONS = (
    "leads",
    "org_state",
    "changes",
    "people",
    "conversations",
    "messages",
    "searches",
    "jobs",
)

INDEXES: dict[str, list[IndexModel]] = {
    "leads": [
        IndexModel(
            [("org", 1), ("source", 1), ("person_id", 1)], name="org_source_person", unique=True
        ),
        IndexModel([("org", "hashed")], name="org_hashed"),
        # One person, one lead: a new lead finds the org's lead of the same
        # person by a normalised email, phone or LinkedIn URL (multikey), of
        # another source than its own (`store.lead_identity`).
        IndexModel([("org", 1), ("identity_keys", 1), ("source", 1)], name=IDENTITY_INDEX),
        *(IndexModel([("org", 1), (key, 1), ("_id", 1)], name=f"list_{key}") for key in SORT_KEYS),
        *(
            IndexModel(
                [("org", 1), ("contact", 1), (key, 1), ("_id", 1)], name=f"list_{key}_contact"
            )
            for key in SORT_KEYS
        ),
    ],
    "changes": [
        IndexModel([("org", 1), ("version", 1)], name="org_version", unique=True),
        IndexModel([("at_epoch", 1)], name="at_epoch"),
    ],
    "people": [
        IndexModel([("name_key", 1)], name="name_key"),
        IndexModel([("company_key", 1)], name="company_key"),
        IndexModel([("industry", 1)], name="industry"),
        IndexModel([("linkedin", 1)], name="linkedin"),
    ],
    "conversations": [
        IndexModel(
            [("org", 1), ("user", 1), ("updated_at", 1), ("_id", 1)], name="org_user_updated"
        )
    ],
    "messages": [
        IndexModel(
            [("org", 1), ("conversation_id", 1), ("created_at", 1), ("_id", 1)],
            name="org_conversation_created",
        ),
        IndexModel(
            [("org", 1), ("user", 1), ("client_message_id", 1)],
            name="org_user_client_message",
            unique=True,
            partialFilterExpression={"client_message_id": {"$type": "string"}},
        ),
    ],
    # Expired result sets are also filtered out on read: the TTL monitor runs once a minute.
    "searches": [
        IndexModel([("expires_at", 1)], name="expires_at", expireAfterSeconds=0),
        IndexModel([("org", 1), ("created_at", 1), ("_id", 1)], name="org_created"),
    ],
    "jobs": [
        IndexModel(
            [("org", 1), ("user", 1), ("status", 1), ("updated_at", 1)], name="org_user_status"
        )
    ],
}


async def create_schema(db: AsyncDatabase[Doc]) -> None:
    """Create the missing collections and every index; when the identity
    index is new, give the leads written before it their identity keys."""
    # Made up front: a transaction on a sharded cluster cannot create them.
    existing = set(await db.list_collection_names())
    for name in COLLECTIONS:
        if name not in existing:
            # Another process may make it between the listing and here: fine.
            with contextlib.suppress(CollectionInvalid):
                await db.create_collection(name)
    had_identity_index = IDENTITY_INDEX in await db["leads"].index_information()
    for name, models in INDEXES.items():
        await db[name].create_indexes(models)
    if not had_identity_index:
        await add_identity_keys(db["leads"])


async def add_identity_keys(leads: AsyncCollection[Doc]) -> None:
    """Give leads written before one person, one lead their
    `identity_keys` (runs when `create_schema` makes the index, so once; a lead
    rewritten meanwhile already has them and is left alone)."""
    missing: Doc = {"identity_keys": {"$exists": False}}
    updates: list[UpdateOne] = []
    fields = {"org": 1, "emails": 1, "phones": 1, "linkedin": 1}
    async for doc in leads.find(missing, projection=fields):
        contacts = (tuple(doc.get("emails") or ()), tuple(doc.get("phones") or ()))
        keys = identity_keys(*contacts, doc.get("linkedin"))
        updates.append(
            UpdateOne(
                {"_id": doc["_id"], "org": doc["org"], **missing},
                {"$set": {"identity_keys": list(keys)}},
            )
        )
        if len(updates) == 1000:
            await leads.bulk_write(updates, ordered=False)
            updates = []
    if updates:
        await leads.bulk_write(updates, ordered=False)
