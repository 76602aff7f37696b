"""`/api/leads`: CRUD, keyset pagination for every sort, filters, bad input."""

from __future__ import annotations

import base64

import orjson
import pytest
from support import bearer

from leadstream.server.http.appkeys import PAGE_CACHE
from leadstream.server.http.appkeys import STORE as STORE_KEY
from leadstream.server.http.page_cache import InProcessPageCache
from leadstream.store.cursors import SORTS
from leadstream.store.records import LeadInput


@pytest.fixture
async def api(server, token, http):
    auth = bearer(token("acme", "alice"))

    async def call(method: str, path: str, *, expect: int, headers: dict | None = None, **kwargs):
        all_headers = {**auth, **(headers or {})}
        response = await http.request(method, server.make_url(path), headers=all_headers, **kwargs)
        assert response.status == expect, await response.text()
        return await response.json() if response.status != 204 else None

    return call


async def seed_leads(server, org: str, count: int) -> None:
    store = server.app[STORE_KEY]
    companies = ["alpha", "Beta", "gamma", "Delta", "epsilon"]
    await store.upsert_leads(
        org,
        [
            LeadInput(
                source="test",
                person_id=f"p{i}",
                name=f"{'abcdefghij'[i % 10].upper()}name {i % 7}",
                company=companies[i % 5],
                title="CTO",
                emails=(f"p{i}@x.example",) if i % 2 else (),
                phones=("+1 415 555 0100",) if i % 3 else (),
            )
            for i in range(count)
        ],
    )


@pytest.mark.parametrize("sort", list(SORTS))
@pytest.mark.parametrize("has_phone", [False, True])
async def test_walking_every_page_yields_each_lead_once_in_order(server, api, sort, has_phone):
    await seed_leads(server, "acme", 137)
    query = f"/api/leads?limit=20&sort={sort}" + ("&hasPhone=true" if has_phone else "")
    seen, cursor, pages = [], None, 0
    while True:
        page = await api("GET", query + (f"&cursor={cursor}" if cursor else ""), expect=200)
        seen.extend(page["leads"])
        pages += 1
        cursor = page["nextCursor"]
        if cursor is None:
            break
    expected = 137 if not has_phone else sum(1 for i in range(137) if i % 3)
    assert len(seen) == expected and len({lead["id"] for lead in seen}) == expected
    assert pages == -(-expected // 20)
    field, direction = sort.split(":")
    keys = [
        ((lead[field].casefold() if field != "createdAt" else lead[field]), lead["id"])
        for lead in seen
    ]
    assert keys == sorted(keys, reverse=direction == "desc")
    if has_phone:
        assert all(lead["phones"] for lead in seen)


async def test_filters(server, api):
    await seed_leads(server, "acme", 30)
    await seed_leads(server, "globex", 30)
    with_email = await api("GET", "/api/leads?hasEmail=true&limit=200", expect=200)
    assert len(with_email["leads"]) == 15 and all(lead["emails"] for lead in with_email["leads"])
    by_company = await api("GET", "/api/leads?company=BETA&limit=200", expect=200)
    assert {lead["company"] for lead in by_company["leads"]} == {"Beta"}
    assert len(by_company["leads"]) == 6
    by_email = await api("GET", "/api/leads?q=p13@x", expect=200)
    assert [lead["personId"] for lead in by_email["leads"]] == ["p13"]
    by_phone_digits = await api("GET", "/api/leads?q=4155550100&limit=200", expect=200)
    assert len(by_phone_digits["leads"]) == 20
    stats = await api("GET", "/api/leads/stats", expect=200)
    assert stats == {"total": 30, "withEmail": 15, "withPhone": 20, "withBoth": 10}


async def test_crud_and_change_versions(api):
    created = await api(
        "POST",
        "/api/leads",
        expect=201,
        json={
            "name": "Ada Lovelace",
            "company": "Analytical",
            "emails": ["ada@an.example"],
            "tags": ["vip"],
        },
    )
    assert created["source"] == "manual" and created["personId"] == "email:ada@an.example"
    again = await api(
        "POST", "/api/leads", expect=200, json={"name": "Ada L.", "emails": ["ADA@an.example"]}
    )
    assert again["id"] == created["id"] and again["name"] == "Ada L."
    patched = await api(
        "PATCH", f"/api/leads/{created['id']}", expect=200, json={"phones": ["+44 20 7946 0000"]}
    )
    assert patched["phones"] == ["+44 20 7946 0000"] and patched["tags"] == ["vip"]
    assert (await api("GET", f"/api/leads/{created['id']}", expect=200)) == patched
    tagged = await api("GET", "/api/leads?tag=vip", expect=200)
    assert [lead["id"] for lead in tagged["leads"]] == [created["id"]]
    await api("DELETE", f"/api/leads/{created['id']}", expect=204)
    await api("GET", f"/api/leads/{created['id']}", expect=404)
    await api("DELETE", f"/api/leads/{created['id']}", expect=404)
    listing = await api("GET", "/api/leads", expect=200)
    assert listing["leads"] == [] and listing["version"] == 4  # insert, update, update, delete


async def test_a_posted_lead_of_a_known_person_is_merged_into_its_lead(server, api):
    store = server.app[STORE_KEY]
    saved = await store.upsert_leads(
        "acme",
        [LeadInput("directory", "dir1", "Ada", phones=("+1 (415) 555-0100",), tags=("vip",))],
    )
    found = saved.leads[0].to_wire()
    assert found["sources"] == ["directory"] and found["notes"] is None
    merged = await api(
        "POST",
        "/api/leads",
        expect=200,
        json={
            "name": "Ada Lovelace",
            "emails": ["ada@an.example"],
            "phones": ["+14155550100"],
            "linkedin": "https://www.linkedin.com/in/ada/",
            "tags": ["math"],
            "notes": "from the fair",
        },
    )
    assert merged["id"] == found["id"] and merged["personId"] == "dir1"
    assert merged["name"] == "Ada Lovelace" and merged["phones"] == ["+1 (415) 555-0100"]
    assert merged["emails"] == ["ada@an.example"] and merged["tags"] == ["vip", "math"]
    assert merged["notes"] == "from the fair" and merged["sources"] == ["directory", "manual"]
    by_linkedin = await api(
        "POST",
        "/api/leads",
        expect=200,
        json={"name": "A. Lovelace", "linkedin": "http://linkedin.com/in/ADA?trk=x"},
    )
    assert by_linkedin["id"] == found["id"]
    # Two people typed in by hand sharing an office line stay two leads.
    colleague = await api(
        "POST",
        "/api/leads",
        expect=201,
        json={"name": "Charles Babbage", "phones": ["+44 20 7946 0000"]},
    )
    other = await api(
        "POST",
        "/api/leads",
        expect=201,
        json={"name": "Mary Somerville", "phones": ["+44 20 7946 0000"]},
    )
    assert other["id"] != colleague["id"]
    assert (await api("GET", "/api/leads/stats", expect=200))["total"] == 3
    log = await store.changes_since("acme", 0)
    assert [(c.op, c.lead_id) for c in log.changes][:3] == [
        ("insert", found["id"]),
        ("update", found["id"]),
        ("update", found["id"]),
    ]


async def test_notes_are_edited_with_patch_and_bounded(api):
    lead = await api("POST", "/api/leads", expect=201, json={"name": "Ada", "notes": "first call"})
    assert lead["notes"] == "first call"
    notes = "Prefers email.\nCall back in May — après la conférence." + "x" * 3900
    patched = await api("PATCH", f"/api/leads/{lead['id']}", expect=200, json={"notes": notes})
    assert patched["notes"] == notes and len(notes) <= 4000
    assert (await api("GET", f"/api/leads/{lead['id']}", expect=200))["notes"] == notes
    error = await api("PATCH", f"/api/leads/{lead['id']}", expect=422, json={"notes": "y" * 4001})
    assert error["error"]["code"] == "invalid_fields"
    assert error["error"]["details"]["fields"][0]["field"] == "notes"
    assert "4000 characters" in error["error"]["message"]
    assert (await api("GET", f"/api/leads/{lead['id']}", expect=200))["notes"] == notes
    cleared = await api("PATCH", f"/api/leads/{lead['id']}", expect=200, json={"notes": None})
    assert cleared["notes"] is None


async def test_other_orgs_leads_are_invisible(server, token, http, api):
    created = await api("POST", "/api/leads", expect=201, json={"name": "Secret Person"})
    other = bearer(token("globex", "mallory"))
    for method in ("GET", "PATCH", "DELETE"):
        response = await http.request(
            method,
            server.make_url(f"/api/leads/{created['id']}"),
            headers=other,
            json={"name": "x"},
        )
        assert response.status == 404
    listing = await (await http.get(server.make_url("/api/leads"), headers=other)).json()
    assert listing["leads"] == []
    assert (await api("GET", f"/api/leads/{created['id']}", expect=200))["name"] == "Secret Person"


BAD_QUERIES = [
    ("limit=0", "invalid_limit"),
    ("limit=201", "invalid_limit"),
    ("limit=ten", "invalid_limit"),
    ("sort=phone:asc", "invalid_sort"),
    ("hasPhone=yes", "invalid_filter"),
    ("cursor=not-a-cursor", "invalid_cursor"),
    (
        "cursor=" + base64.urlsafe_b64encode(orjson.dumps(["name:asc", "a", "b"])).decode(),
        "invalid_cursor",
    ),
    (
        "cursor=" + base64.urlsafe_b64encode(orjson.dumps({"org": "globex"})).decode(),
        "invalid_cursor",
    ),
    ("q=" + "x" * 201, "invalid_filter"),
    # Search bounds (defaults: 8 words, 2 characters): each would match nearly every lead.
    ("q=a", "query_too_broad"),
    ("q=e%20e%20e%20e", "query_too_broad"),
    ("q=0%201%202%203%204%205%206%207%208%209", "query_too_broad"),
    ("q=" + "%20".join(f"word{i}" for i in range(9)), "query_too_broad"),
]


@pytest.mark.parametrize(("query", "code"), BAD_QUERIES)
async def test_bad_list_queries_get_400(api, query, code):
    body = await api("GET", f"/api/leads?{query}", expect=400)
    assert body["error"]["code"] == code and body["error"]["message"]


BAD_BODIES = [
    {"company": "no name"},
    {"name": ""},
    {"name": "x" * 201},
    {"name": "A", "emails": ["not-an-email"]},
    {"name": "A", "phones": ["call me"]},
    {"name": "A", "linkedin": "javascript:alert(1)"},
    {"name": "A", "tags": ["x" * 51]},
    {"name": "A", "unknown": 1},
    {"name": "A", "emails": "a@b.example"},
    {"name": "A", "notes": "x" * 4001},
    {"name": "A", "notes": ["not text"]},
]


@pytest.mark.parametrize("body", BAD_BODIES)
async def test_invalid_writes_get_422_and_change_nothing(api, body):
    kept = await api(
        "POST", "/api/leads", expect=201, json={"name": "Kept", "emails": ["k@k.example"]}
    )
    error = await api("POST", "/api/leads", expect=422, json=body)
    assert error["error"]["code"] == "invalid_fields" and error["error"]["details"]["fields"]
    patch_error = await api(
        "PATCH", f"/api/leads/{kept['id']}", expect=422, json={**body, "name": body.get("name", "")}
    )
    assert patch_error["error"]["code"] == "invalid_fields"
    assert await api("GET", f"/api/leads/{kept['id']}", expect=200) == kept
    assert (await api("GET", "/api/leads/stats", expect=200))["total"] == 1


async def test_malformed_json_gets_400(api):
    error = await api(
        "POST",
        "/api/leads",
        expect=400,
        data=b"{not json",
        headers={"Content-Type": "application/json"},
    )
    assert error["error"]["code"] == "invalid_json"
    error = await api("POST", "/api/leads", expect=400, json=[1, 2])
    assert error["error"]["code"] == "invalid_json"


async def test_an_export_with_a_too_broad_q_is_refused_before_a_job_is_made(server, api):
    await seed_leads(server, "acme", 10)
    refused = await api("POST", "/api/exports", expect=400, json={"filter": {"q": "a b"}})
    assert refused["error"]["code"] == "query_too_broad" and refused["error"]["message"]
    # The same export with a word that can be looked up starts as usual.
    await api("POST", "/api/exports", expect=202, json={"filter": {"q": "a b lead"}})


async def test_one_query_spelled_differently_is_one_cached_page(server, api):
    cache = server.app[PAGE_CACHE]
    await seed_leads(server, "acme", 30)
    first = await api("GET", "/api/leads?q=alpha%20cto", expect=200)
    assert first["leads"] and len(cache) == 1
    hits = cache.hits
    for spelling in ("ALPHA%20cto", "%20cto!!%20alpha", "Alpha,CTO,cto,al"):
        assert await api("GET", f"/api/leads?q={spelling}", expect=200) == first
    assert (cache.hits, len(cache)) == (hits + 3, 1)
    assert await api("GET", "/api/leads?q=beta", expect=200) != first  # another query: its own
    assert len(cache) == 2


async def test_the_page_cache_is_bounded_by_bytes_and_drops_expired_pages():
    cache = InProcessPageCache(max_bytes=8000, ttl_s=60)
    for i in range(50):
        await cache.set(f"k{i}", b"x" * 500)
    assert cache.bytes <= 8000 and len(cache) == 11  # the newest ones (700 bytes each)
    assert await cache.get("k0") is None and await cache.get("k49") == b"x" * 500
    await cache.set("big", b"x" * 1001)  # over an eighth of the bound: not kept
    assert await cache.get("big") is None
    expiring = InProcessPageCache(max_bytes=8000, ttl_s=-1)  # pages expired at once
    for i in range(5):
        await expiring.set(f"k{i}", b"x" * 100)
    assert len(expiring) == 1  # each set swept the expired ones
    assert await expiring.get("k4") is None and (len(expiring), expiring.bytes) == (0, 0)


async def test_list_pages_are_cached_until_the_org_changes(server, api, token, http):
    cache = server.app[PAGE_CACHE]
    await api("POST", "/api/leads", expect=201, json={"name": "First"})
    first = await api("GET", "/api/leads?sort=name:asc", expect=200)
    hits = cache.hits
    assert await api("GET", "/api/leads?sort=name:asc", expect=200) == first
    assert cache.hits == hits + 1
    other_org = await http.get(
        server.make_url("/api/leads?sort=name:asc"), headers=bearer(token("globex", "x"))
    )
    assert (await other_org.json())["leads"] == []  # another org never gets acme's cached page
    await api("POST", "/api/leads", expect=201, json={"name": "Second"})
    after = await api("GET", "/api/leads?sort=name:asc", expect=200)
    assert [lead["name"] for lead in after["leads"]] == ["First", "Second"]
    assert after["version"] == first["version"] + 1


async def test_an_imported_row_of_a_known_person_is_merged_into_its_lead(
    server, connect, token, http
):
    store = server.app[STORE_KEY]
    saved = await store.upsert_leads(
        "acme", [LeadInput("directory", "dir1", "Ada", emails=("ada@an.example",))]
    )
    lead_id = saved.leads[0].id
    owner = await connect(server, token())
    await owner.call("leads:subscribe", {})
    csv_text = (
        "Name,Email,Phone\nAda Lovelace,ADA@an.example,+44 20 7946 0001\nGrace,g@x.example,\n"
    )
    response = await http.post(
        server.make_url("/api/leads/import"),
        data=csv_text.encode(),
        headers={**bearer(token()), "Content-Type": "text/csv; charset=utf-8"},
    )
    assert response.status == 202, await response.text()
    job_id = (await response.json())["jobId"]
    done = await owner.log.wait_for("import:done", lambda d: d["jobId"] == job_id)
    assert (done["saved"], done["updated"]) == (1, 1)
    changes = [c for e in owner.log.of("leads:changes") for c in e["changes"]]
    assert [c["op"] for c in changes] == ["update", "insert"] and changes[0]["id"] == lead_id
    merged = changes[0]["lead"]
    assert merged["name"] == "Ada Lovelace" and merged["sources"] == ["directory", "import"]
    assert merged["phones"] == ["+44 20 7946 0001"]
    assert (await store.lead_stats("acme")).total == 2
