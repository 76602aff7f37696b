"""CSV imports through the whole app: `POST /api/leads/import` on a real
port, the job on the app's queue, `import:done` and `leads:changes` on real
Socket.IO clients, the result at `GET /api/jobs/{id}`."""

from __future__ import annotations

import asyncio
import time
import tracemalloc
from pathlib import Path

import aiohttp
from support import ServerProcess, bearer, connect_client, instances_env, settings_with

from leadstream.server.http.appkeys import IMPORTS
from leadstream.server.jobs.imports import LeadRows
from leadstream.store.records import LeadInput

# Line numbers of the file (header = line 1) are in the comments.
MESSY_CSV = (
    "Name,Title,Company,Email,Phone,Tags,Notes\n"  # 1
    'Ada Lovelace,CTO,Analytical Engines,ada@example.com,+44 20 7946 0001,vip; math,"a note\n'  # 2
    'over two lines"\n'  # 3
    "Bad Email,CEO,Acme,not-an-email,,,\n"  # 4
    ",Nameless,Acme,nameless@example.com,,,\n"  # 5
    "Grace Hopper,Rear Admiral,US Navy,grace@example.com;g.hopper@example.com,,,\n"  # 6
    '"Katherine\n'  # 7
    'Johnson",Mathematician,NASA,,,,\n'  # 8
    "\n"  # 9: blank, skipped
    "Too Many,Cells,Acme,many@example.com,,,,surplus\n"  # 10
    "Edsger Dijkstra,Professor,UT Austin,,+1 (512) 555-0100,,\n"  # 11
)


async def start_import(http, server, token: str, text: str) -> str:
    response = await http.post(
        server.make_url("/api/leads/import"),
        data=text.encode(),
        headers={**bearer(token), "Content-Type": "text/csv; charset=utf-8"},
    )
    assert response.status == 202, await response.text()
    return (await response.json())["jobId"]


async def get_job(http, server, token: str, job_id: str) -> dict:
    response = await http.get(server.make_url(f"/api/jobs/{job_id}"), headers=bearer(token))
    assert response.status == 200
    return await response.json()


async def lead_total(http, server, token: str) -> int:
    response = await http.get(server.make_url("/api/leads/stats"), headers=bearer(token))
    return (await response.json())["total"]


async def test_import_saves_valid_rows_and_reports_bad_ones_by_line(
    settings, server, connect, token, http
):
    owner = await connect(server, token("acme", "alice"))
    watcher = await connect(server, token("acme", "bob"))
    ack = await watcher.call("leads:subscribe", {})
    assert ack["ok"]

    job_id = await start_import(http, server, token("acme", "alice"), MESSY_CSV)
    done = await owner.log.wait_for("import:done", lambda d: d["jobId"] == job_id)

    assert done["saved"] == 4 and done["updated"] == 0
    lines = [(e["line"], e["message"]) for e in done["errors"]]
    assert [line for line, _ in lines] == [4, 5, 10]
    assert "not an email address" in lines[0][1]
    assert lines[1][1].startswith("name:")
    assert "8 cells" in lines[2][1]
    assert "error" not in done

    job = await get_job(http, server, token("acme", "alice"), job_id)
    assert job["kind"] == "import" and job["status"] == "done"
    assert job["result"] == {k: v for k, v in done.items() if k != "jobId"}
    assert job["done"] == job["total"] == len(MESSY_CSV.encode())

    changes: list[dict] = []
    async with asyncio.timeout(10):
        while len(changes) < 4:
            await watcher.log.wait_for("leads:changes")
            changes = [c for event in watcher.log.of("leads:changes") for c in event["changes"]]
    assert {c["op"] for c in changes} == {"insert"}
    by_name = {c["lead"]["name"]: c["lead"] for c in changes}
    assert set(by_name) == {"Ada Lovelace", "Grace Hopper", "Katherine\nJohnson", "Edsger Dijkstra"}
    ada = by_name["Ada Lovelace"]
    assert ada["source"] == "import" and ada["personId"] == "email:ada@example.com"
    assert ada["phones"] == ["+44 20 7946 0001"] and ada["tags"] == ["vip", "math"]
    assert by_name["Grace Hopper"]["emails"] == ["grace@example.com", "g.hopper@example.com"]
    assert by_name["Katherine\nJohnson"]["personId"] == "name:katherine johnson|nasa"
    assert not owner.log.of("leads:changes")  # alice did not subscribe
    assert not list((settings.data_dir / "imports").iterdir())  # the upload is deleted


async def test_importing_the_same_file_twice_updates_never_duplicates(server, connect, token, http):
    owner = await connect(server, token())
    form = aiohttp.FormData()
    form.add_field("note", "ignored")
    form.add_field("file", MESSY_CSV.encode(), filename="leads.csv", content_type="text/csv")
    first = await http.post(
        server.make_url("/api/leads/import"), data=form, headers=bearer(token())
    )
    assert first.status == 202, await first.text()
    first_id = (await first.json())["jobId"]
    done = await owner.log.wait_for("import:done", lambda d: d["jobId"] == first_id)
    assert (done["saved"], done["updated"]) == (4, 0)

    second_id = await start_import(http, server, token(), MESSY_CSV)
    again = await owner.log.wait_for("import:done", lambda d: d["jobId"] == second_id)
    assert (again["saved"], again["updated"]) == (0, 4)
    assert [e["line"] for e in again["errors"]] == [4, 5, 10]
    assert await lead_total(http, server, token()) == 4


async def test_an_export_of_ours_imports_as_it_is(server, connect, token, http):
    owner = await connect(server, token())
    exported = (
        "Name,Company,Phone,Email,LinkedIn,Title,Location,Industry,Tags,Added,Phones,Emails\n"
        "Ada Lovelace,Analytical Engines,'+44 20 7946 0001,ada@example.com,"
        "https://www.linkedin.com/in/ada,CTO,London,computing,vip; math,"
        "2026-11-28T09:15:02.123Z,'+44 20 7946 0001; +44 20 7946 0002,ada@example.com\n"
    )
    job_id = await start_import(http, server, token(), exported)
    done = await owner.log.wait_for("import:done", lambda d: d["jobId"] == job_id)
    assert (done["saved"], done["errors"]) == (1, [])
    listed = await http.get(server.make_url("/api/leads?q=Lovelace"), headers=bearer(token()))
    (lead,) = (await listed.json())["leads"]
    assert lead["phones"] == ["+44 20 7946 0001", "+44 20 7946 0002"]
    assert lead["emails"] == ["ada@example.com"] and lead["location"] == "London"


async def test_rows_that_are_not_csv_or_not_utf8_fail_alone(server, connect, token, http):
    owner = await connect(server, token())
    body = (
        b"name,email\n"  # 1
        b"Ana,ana@example.com\n"  # 2
        b"Jos\xe9,jose@example.com\n"  # 3: Windows-1252, not UTF-8
        b'"Quoted"tail,q@example.com\n'  # 4: text after a closing quote
        b"Zoe,zoe@example.com\n"  # 5
    )
    response = await http.post(
        server.make_url("/api/leads/import"),
        data=body,
        headers={**bearer(token()), "Content-Type": "text/csv"},
    )
    job_id = (await response.json())["jobId"]
    done = await owner.log.wait_for("import:done", lambda d: d["jobId"] == job_id)
    assert done["saved"] == 2
    assert [(e["line"], e["message"]) for e in done["errors"]] == [
        (3, "the row is not UTF-8 text; save the file as CSV UTF-8"),
        # The csv module's own words (',' expected after '"') are logged, not shown.
        (
            4,
            "cannot be read as CSV: a quoted cell has text after its closing quote "
            '(write a quote in a cell as "")',
        ),
    ]


async def test_errors_past_a_thousand_are_counted_not_listed(server, connect, token, http):
    owner = await connect(server, token())
    rows = "".join(f"Person {i},not-an-email\n" for i in range(1200))
    job_id = await start_import(
        http, server, token(), "name,email\n" + rows + "Last,l@example.com\n"
    )
    done = await owner.log.wait_for("import:done", lambda d: d["jobId"] == job_id)
    assert done["saved"] == 1 and len(done["errors"]) == 1000
    assert done["errors"][-1]["line"] == 1001 and done["errorsOmitted"] == 200


async def test_a_header_without_name_fails_the_job_and_still_says_done(
    settings, server, connect, token, http
):
    owner = await connect(server, token())
    job_id = await start_import(http, server, token(), "email,company\nada@example.com,Acme\n")
    done = await owner.log.wait_for("import:done", lambda d: d["jobId"] == job_id)
    assert done["error"]["code"] == "missing_name_column"
    assert done["saved"] == 0 and done["errors"][0]["line"] == 1
    job = await get_job(http, server, token(), job_id)
    assert job["status"] == "failed" and job["error"]["code"] == "missing_name_column"
    assert "'email', 'company'" in job["error"]["message"]
    assert not list((settings.data_dir / "imports").iterdir())


async def test_oversize_uploads_get_413_and_store_nothing(settings, start_server, token, http):
    small = settings_with(settings, max_upload=2048)
    server = await start_server(small)
    big = "name,email\n" + "".join(f"Person {i},p{i}@example.com\n" for i in range(500))
    assert len(big) > 2048

    declared = await http.post(
        server.make_url("/api/leads/import"),
        data=big.encode(),
        headers={**bearer(token()), "Content-Type": "text/csv"},
    )
    assert declared.status == 413
    assert (await declared.json())["error"]["code"] == "payload_too_large"

    async def chunks():  # no Content-Length: the limit is found while reading
        data = big.encode()
        for start in range(0, len(data), 512):
            yield data[start : start + 512]

    streamed = await http.post(
        server.make_url("/api/leads/import"),
        data=chunks(),
        headers={**bearer(token()), "Content-Type": "text/csv"},
    )
    assert streamed.status == 413
    assert (await streamed.json())["error"]["code"] == "payload_too_large"

    form = aiohttp.FormData()
    form.add_field("file", big.encode(), filename="big.csv", content_type="text/csv")
    multipart = await http.post(
        server.make_url("/api/leads/import"), data=form, headers=bearer(token())
    )
    assert multipart.status == 413

    assert await lead_total(http, server, token()) == 0
    folder = small.data_dir / "imports"
    assert not folder.exists() or not list(folder.iterdir())


async def test_wrong_type_empty_body_and_no_file_are_refused(server, token, http):
    url = server.make_url("/api/leads/import")
    no_file = aiohttp.FormData(default_to_multipart=True)
    no_file.add_field("note", "no file here")
    cases = [
        (b'{"name": "x"}', "application/json", 415, "unsupported_media_type"),
        (b"", "text/csv", 400, "empty_body"),
        (no_file, None, 400, "missing_file"),
    ]
    for data, content_type, status, code in cases:
        headers = bearer(token()) | ({"Content-Type": content_type} if content_type else {})
        response = await http.post(url, data=data, headers=headers)
        assert response.status == status, (code, await response.text())
        assert (await response.json())["error"]["code"] == code
    anonymous = await http.post(url, data=b"name\nAda\n", headers={"Content-Type": "text/csv"})
    assert anonymous.status == 401


async def test_uploads_no_job_took_are_removed_later(server):
    imports = server.app[IMPORTS]
    orphan = imports.upload_path()
    orphan.write_bytes(b"name\nAda\n")
    assert imports.remove_stale_uploads(older_than_s=3600) == 0
    assert imports.remove_stale_uploads(older_than_s=3600, now=time.time() + 7200) == 1
    assert not orphan.exists()


def read_file(path: Path, max_line: int) -> tuple[list[LeadInput], list[dict]]:
    """Every lead and error `LeadRows` reads from the file at `path`."""
    items: list[LeadInput] = []
    errors: list[dict] = []
    with path.open("rb") as raw:
        rows = LeadRows(raw, max_line=max_line)
        rows.read_header()
        while True:
            batch = rows.next_batch(100)
            items += batch.items
            errors += batch.errors
            if batch.finished:
                return items, errors


def test_overlong_lines_and_rows_are_skipped_to_their_end_and_reported(tmp_path):
    note, long = "n" * 600, "x" * 5000
    path = tmp_path / "long.csv"
    path.write_text(
        "name,email\n"  # 1
        "Ada,ada@example.com\n"  # 2
        f"{long},long@example.com\n"  # 3: one line past the limit
        '"Grace\nHopper",grace@example.com\n'  # 4-5: a quoted cell over two lines, short
        f'"Note\n{note}\n{note}\nend",n@example.com\n'  # 6-9: its lines together pass the limit
        f'"Quote ""{"q" * 3000}\nmore",q@example.com\n'  # 10-11: a long line in a quoted cell
        "Zoe,zoe@example.com," + "x," * 300 + "\n"  # 12: 303 cells, the header has 2
        "Bob,bob@example.com,,,,\r\n"  # 13: empty extra cells, as spreadsheets add
        "Last,last@example.com"  # 14: no line ending
    )
    items, errors = read_file(path, max_line=1024)
    assert [item.name for item in items] == ["Ada", "Grace\nHopper", "Bob", "Last"]
    assert [(e["line"], e["message"]) for e in errors] == [
        (3, "line longer than 1,024 characters; skipped"),
        (6, "row longer than 1,024 characters (lines 6-9); skipped"),
        (10, "row longer than 1,024 characters (lines 10-11); skipped"),
        (12, "the row has 303 cells, the header 2 columns"),
    ]


def test_a_very_long_line_is_never_held_in_memory(tmp_path):
    path = tmp_path / "wide.csv"
    with path.open("w") as f:
        f.write("name,email\nAda,ada@example.com\n")
        f.write("ab," * 1_000_000 + "\n")  # 3 MB, a million cells
        f.write("Zoe,zoe@example.com\n")
    tracemalloc.start()
    items, errors = read_file(path, max_line=64 * 1024)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert [item.name for item in items] == ["Ada", "Zoe"]
    assert errors == [{"line": 3, "message": "line longer than 65,536 characters; skipped"}]
    assert peak < 1_000_000, peak  # the line is 3 MB; a few 64 KB pieces at a time


async def test_a_header_longer_than_the_limit_fails_the_job(
    settings, start_server, connect, token, http
):
    server = await start_server(settings_with(settings, csv_max_line=1024))
    owner = await connect(server, token())
    header = "name,email," + ",".join(f"column {i}" for i in range(200))
    job_id = await start_import(http, server, token(), header + "\nAda,ada@example.com\n")
    done = await owner.log.wait_for("import:done", lambda d: d["jobId"] == job_id)
    assert done["error"]["code"] == "header_too_long" and done["saved"] == 0
    assert "longer than 1,024 characters" in done["error"]["message"]
    job = await get_job(http, server, token(), job_id)
    assert job["status"] == "failed" and job["error"]["code"] == "header_too_long"


async def test_a_user_at_the_job_limit_is_refused_before_the_body_is_read(
    settings, start_server, connect, token, http
):
    small = settings_with(settings, jobs_per_user=1)
    server = await start_server(small)
    owner = await connect(server, token())
    url = server.make_url("/api/leads/import")
    headers = {**bearer(token()), "Content-Type": "text/csv"}
    release = asyncio.Event()

    async def held_body():  # an upload in flight holds its job slot
        yield b"name,email\n"
        await release.wait()
        yield b"Ada,ada@example.com\n"

    first = asyncio.create_task(http.post(url, data=held_body(), headers=headers))
    uploads = small.data_dir / "imports"
    async with asyncio.timeout(10):
        while not uploads.exists() or not list(uploads.glob("upload-*.part")):
            await asyncio.sleep(0.01)

    async def endless_body():  # refused without being read: it never ends
        yield b"name,email\n"
        await asyncio.Event().wait()

    refused = await http.post(url, data=endless_body(), headers=headers)
    assert refused.status == 429
    error = (await refused.json())["error"]
    assert error["code"] == "too_many_jobs" and error["details"] == {"limit": 1}
    exports = await http.post(server.make_url("/api/exports"), json={}, headers=bearer(token()))
    assert exports.status == 429  # exports and imports share the limit
    other = await http.post(
        url,
        data=b"name\nBob\n",
        headers={**bearer(token("acme", "bob")), "Content-Type": "text/csv"},
    )
    assert other.status == 202  # another user of the org is not held up

    release.set()
    response = await first
    assert response.status == 202
    first_id = (await response.json())["jobId"]
    await owner.log.wait_for("import:done", lambda d: d["jobId"] == first_id)
    # An upload that fails (empty) gives its slot back; so does a finished job.
    empty = await http.post(url, data=b"", headers=headers)
    assert empty.status == 400
    again = await start_import(http, server, token(), "name\nGrace\n")
    await owner.log.wait_for("import:done", lambda d: d["jobId"] == again)
    assert await lead_total(http, server, token()) == 3


def many_rows_csv(rows: int, bad_every: int) -> str:
    """A file of `rows` data rows; every `bad_every`-th one has a bad email."""
    lines = ["name,email,company\n"]
    for i in range(rows):
        email = "not-an-email" if i % bad_every == bad_every - 1 else f"p{i}@example.com"
        lines.append(f"Person {i},{email},Company {i % 50}\n")
    return "".join(lines)


def check_progress(events: list[dict], job_id: str, text: str, done: dict) -> None:
    """Several events of the job, rows and bytes growing, the last one the whole file."""
    assert all(e["jobId"] == job_id for e in events)
    assert len(events) >= 3, events
    rows = [e["rows"] for e in events]
    sent = [e["bytes"] for e in events]
    assert rows == sorted(set(rows)) and sent == sorted(sent)
    assert {e["totalBytes"] for e in events} == {len(text.encode())}
    assert sent[-1] == len(text.encode()) and sent[0] < sent[-1]
    total_rows = done["saved"] + done["updated"] + len(done["errors"])
    assert rows[-1] == total_rows == text.count("\n") - 1


async def test_import_progress_reaches_the_user_in_rows_then_done(
    settings, start_server, connect, token, http
):
    server = await start_server(settings_with(settings, import_progress_ms=0))
    owner = await connect(server, token("acme", "alice"))
    other_tab = await connect(server, token("acme", "alice"))
    teammate = await connect(server, token("acme", "bob"))
    text = many_rows_csv(4500, bad_every=500)
    job_id = await start_import(http, server, token("acme", "alice"), text)
    done = await owner.log.wait_for("import:done", lambda d: d["jobId"] == job_id)
    assert (done["saved"], len(done["errors"])) == (4491, 9)

    # One event after each batch of 1,000 rows, the last one before import:done.
    events = owner.log.of("import:progress")
    assert [e["rows"] for e in events] == [1000, 2000, 3000, 4000, 4500]
    check_progress(events, job_id, text, done)
    names = [name for name, _ in owner.log.events if name.startswith("import:")]
    assert names == ["import:progress"] * 5 + ["import:done"]
    # Every connection of the user gets them; nobody else does.
    await other_tab.log.wait_for("import:done", lambda d: d["jobId"] == job_id)
    assert other_tab.log.of("import:progress") == events
    assert not teammate.log.of("import:progress") and not teammate.log.of("import:done")
    # Polling agrees with the events: done/total are bytes of the file.
    job = await get_job(http, server, token("acme", "alice"), job_id)
    assert (job["done"], job["total"]) == (events[-1]["bytes"], events[-1]["totalBytes"])


async def test_import_progress_is_throttled_and_always_ends_with_the_final_counts(
    settings, start_server, connect, token, http
):
    server = await start_server(settings_with(settings, import_progress_ms=600_000))
    owner = await connect(server, token())
    text = many_rows_csv(3500, bad_every=1000)
    job_id = await start_import(http, server, token(), text)
    await owner.log.wait_for("import:done", lambda d: d["jobId"] == job_id)
    # The first batch at once, then nothing for ten minutes, but the final counts.
    events = owner.log.of("import:progress")
    assert [e["rows"] for e in events] == [1000, 3500]
    assert events[-1]["bytes"] == events[-1]["totalBytes"] == len(text.encode())

    small = "name\nAda\nGrace\n"
    small_id = await start_import(http, server, token(), small)
    await owner.log.wait_for("import:done", lambda d: d["jobId"] == small_id)
    only = [e for e in owner.log.of("import:progress") if e["jobId"] == small_id]
    assert only == [{"jobId": small_id, "rows": 2, "bytes": len(small), "totalBytes": len(small)}]


async def test_a_failed_import_sends_done_without_progress(server, connect, token, http):
    owner = await connect(server, token())
    job_id = await start_import(http, server, token(), "email\nada@example.com\n")
    done = await owner.log.wait_for("import:done", lambda d: d["jobId"] == job_id)
    assert done["error"]["code"] == "missing_name_column"
    assert owner.log.of("import:progress") == []


async def test_import_progress_from_a_worker_process(tmp_path, redis_server):
    """`leadstream worker` runs the import (serve takes no jobs) and its events
    reach the user's connection on the server through Redis."""
    env = instances_env(
        tmp_path / "shared",
        redis_server.url,
        LEADSTREAM_PEOPLE="0",
        LEADSTREAM_SERVE_WORKERS="0",
        LEADSTREAM_IMPORT_PROGRESS_MS="0",
        LEADSTREAM_LOG_LEVEL="WARNING",
    )
    async with ServerProcess(tmp_path / "server", env) as server:
        token = server.token()
        tab = await connect_client(server.url, {"token": token}, ("import:progress", "import:done"))
        sio, log = tab.sio, tab.log
        worker = server.worker()
        try:
            text = many_rows_csv(3200, bad_every=400)
            async with aiohttp.ClientSession(headers=bearer(token)) as http:
                created = await http.post(
                    server.url + "/api/leads/import",
                    data=text.encode(),
                    headers={"Content-Type": "text/csv"},
                )
                assert created.status == 202, await created.text()
                job_id = (await created.json())["jobId"]
                done = await log.wait_for("import:done", lambda d: d["jobId"] == job_id, 60)
                job = await (await http.get(f"{server.url}/api/jobs/{job_id}")).json()
            assert (done["saved"], len(done["errors"])) == (3192, 8)
            events = log.of("import:progress")
            assert [e["rows"] for e in events] == [1000, 2000, 3000, 3200]
            check_progress(events, job_id, text, done)
            assert [name for name, _ in log.events][-1] == "import:done"
            assert job["status"] == "done" and job["done"] == job["total"] == len(text.encode())
        finally:
            await sio.disconnect()
            worker.terminate()
            worker.wait(timeout=10)
