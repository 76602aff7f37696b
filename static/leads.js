"use strict";
// The page's lead views: the saved leads (sort, filters, server-side search, cursor
// pages loaded on scroll, live leads:changes applied in place), the stats cards,
// the results of the current search (leads:batch, kept current by the saved leads'
// feed) and CSV export of the list.

(function (global) {
  const ns = global.Leadstream;
  const { el, button, count, percent, plural, link, httpUrl, debounce } = ns.ui;
  const FIRST_PAGE = 100;
  const NEXT_PAGE = 200;
  const SEARCH_DEBOUNCE_MS = 300;
  const STATS_DEBOUNCE_MS = 400;
  const SUBSCRIBE_RETRY_MS = 2000;
  // How long a change that overtook an earlier version waits for it (see applyChanges).
  const REORDER_MS = 1000;
  const SORTS = {
    "createdAt:desc": ["createdAt", -1], "createdAt:asc": ["createdAt", 1],
    "name:asc": ["name", 1], "company:asc": ["company", 1],
  };

  const $ = (id) => document.getElementById(id);

  // ---- order and filters, as the server applies them --------------------------
  function sortValue(lead, field) {
    const value = lead[field] || "";
    return field === "createdAt" ? value : value.toLowerCase();
  }

  function comparator(sort) {
    const [field, direction] = SORTS[sort];
    return (a, b) => {
      const x = sortValue(a, field);
      const y = sortValue(b, field);
      if (x !== y) return (x < y ? -1 : 1) * direction;
      return (a.id < b.id ? -1 : a.id > b.id ? 1 : 0) * direction; // ties: by id, same direction
    };
  }

  function searchText(lead) {
    const phones = lead.phones || [];
    const digits = phones.map((p) => p.replace(/\D/g, ""));
    return [lead.name, lead.company, lead.title, ...(lead.emails || []), ...phones, ...digits].join(" ").toLowerCase();
  }

  function matcher({ hasPhone, hasEmail, q }) {
    const needle = q.toLowerCase();
    return (lead) => (!hasPhone || lead.phones?.length > 0) && (!hasEmail || lead.emails?.length > 0)
      && (!needle || searchText(lead).includes(needle));
  }

  // First index whose row sorts after `lead` (binary search).
  function insertionIndex(rows, lead, compare) {
    let low = 0;
    let high = rows.length;
    while (low < high) {
      const mid = (low + high) >> 1;
      if (compare(rows[mid], lead) < 0) low = mid + 1;
      else high = mid;
    }
    return low;
  }

  function emptyState(title, text, action) {
    const box = el("div", "empty-state");
    box.append(el("p", "empty-title", title), el("p", "empty-text", text));
    if (action) box.append(action);
    return box;
  }

  // ---- stats cards ----------------------------------------------------------------
  function createStats(client, onTotal) {
    const els = {
      total: $("stat-total"), email: $("stat-email"), phone: $("stat-phone"), both: $("stat-both"),
      emailNote: $("stat-email-note"), phoneNote: $("stat-phone-note"), bothNote: $("stat-both-note"),
      emailBar: $("stat-email-bar"), phoneBar: $("stat-phone-bar"), bothBar: $("stat-both-bar"),
    };
    function show(stats) {
      els.total.textContent = count(stats.total);
      const cards = [[els.email, els.emailNote, els.emailBar, stats.withEmail],
        [els.phone, els.phoneNote, els.phoneBar, stats.withPhone], [els.both, els.bothNote, els.bothBar, stats.withBoth]];
      for (const [value, note, bar, n] of cards) {
        const pct = percent(n, stats.total);
        value.textContent = count(n);
        note.replaceChildren(`${pct}%`, el("span", "stat-word", " coverage"));
        bar.style.width = `${pct}%`;
      }
      onTotal(stats.total);
    }

    async function refresh() {
      try {
        show(await client.api("/api/leads/stats"));
      } catch {
        els.emailNote.textContent = "Stats unavailable; they retry on the next change.";
      }
    }

    return { refresh, refreshSoon: debounce(refresh, STATS_DEBOUNCE_MS) };
  }

  // ---- saved leads ------------------------------------------------------------------
  /**
   * @param {object} o
   * @param {(changes: object[]) => void} [o.onApplied]  every change of the org, in version order,
   *   after the list applied it (other views of saved leads follow this one feed)
   * @param {() => void} [o.onResync]  the list reloaded: changes before its new version were skipped
   * @param {(lead, key: string) => void} [o.onOpen]  a row was clicked
   * @param {(lead) => string} [o.rowState]  see createLeadTable
   */
  function createSavedLeads({ client, onTotal, onAskAssistant, onApplied, onResync, onOpen, rowState }) {
    const els = { q: $("q"), sort: $("sort"), hasPhone: $("has-phone"), hasEmail: $("has-email"),
      foot: $("saved-foot"), exportButton: $("export"), exportStatus: $("export-status") };
    const query = { sort: "createdAt:desc", hasPhone: false, hasEmail: false, q: "" };
    const list = { rows: [], byId: new Map(), nextCursor: null, complete: false, loading: false,
      loadedOnce: false, error: null, generation: 0, abort: null };
    const feed = { version: null, live: false, buffered: [], subscribing: false, again: false,
      early: new Map(), gapTimer: null };
    const stats = createStats(client, onTotal);
    const table = ns.createLeadTable({
      root: $("saved-table"), label: "Saved leads", testId: "leads",
      onSort: (sort) => setQuery({ sort }), onNearEnd: loadMore, onOpen, rowState,
    });
    let compare = comparator(query.sort);
    let matches = matcher(query);

    const filtered = () => query.hasPhone || query.hasEmail || Boolean(query.q);

    function listUrl(cursor, limit) {
      const params = new URLSearchParams({ limit: String(limit), sort: query.sort });
      if (query.hasPhone) params.set("hasPhone", "true");
      if (query.hasEmail) params.set("hasEmail", "true");
      if (query.q) params.set("q", query.q);
      if (cursor) params.set("cursor", cursor);
      return `/api/leads?${params}`;
    }

    function setQuery(changes) {
      Object.assign(query, changes);
      els.sort.value = query.sort;
      els.hasPhone.checked = query.hasPhone;
      els.hasEmail.checked = query.hasEmail;
      if (els.q.value.trim() !== query.q) els.q.value = query.q;
      compare = comparator(query.sort);
      matches = matcher(query);
      table.setSort(query.sort);
      reload();
    }

    // The first page of the current query, then the feed from that page's version.
    async function reload() {
      list.generation += 1;
      const generation = list.generation;
      list.abort?.abort();
      list.abort = new AbortController();
      feed.live = false; // the new list catches up through leads:subscribe {since}
      closeGap();
      list.loading = true;
      table.element.setAttribute("aria-busy", "true");
      showFoot();
      if (!list.loadedOnce) table.setOverlay(el("p", "loading-state", "Loading your leads…"));
      let page;
      try {
        page = await client.api(listUrl(null, FIRST_PAGE), { signal: list.abort.signal });
      } catch (err) {
        if (generation !== list.generation) return;
        list.loading = false;
        table.element.removeAttribute("aria-busy");
        return showLoadError(err);
      }
      if (generation !== list.generation) return;
      table.element.removeAttribute("aria-busy");
      list.rows = page.leads || [];
      list.byId = new Map(list.rows.map((lead) => [lead.id, lead]));
      list.nextCursor = page.nextCursor;
      list.complete = !page.nextCursor;
      list.loading = false;
      list.loadedOnce = true;
      list.error = null;
      feed.version = page.version;
      table.setRows(list.rows);
      table.scrollToTop();
      showList();
      stats.refresh();
      subscribe();
      onResync?.();
    }

    async function loadMore() {
      if (list.loading || list.complete || !list.nextCursor || list.error) return;
      const generation = list.generation;
      list.loading = true;
      showFoot();
      let page;
      try {
        page = await client.api(listUrl(list.nextCursor, NEXT_PAGE), { signal: list.abort.signal });
      } catch (err) {
        if (generation !== list.generation) return;
        list.loading = false;
        list.error = err;
        return showFoot();
      }
      if (generation !== list.generation) return;
      for (const lead of page.leads || []) {
        if (list.byId.has(lead.id)) continue; // already here (inserted live)
        list.rows.push(lead);
        list.byId.set(lead.id, lead);
      }
      list.nextCursor = page.nextCursor;
      list.complete = !page.nextCursor;
      list.loading = false;
      table.refresh();
      showList();
    }

    // ---- live feed --------------------------------------------------------------
    // Joins the feed from the list's version. Live events that arrive while the ack is
    // on its way are buffered; before that they are covered by the ack itself.
    async function subscribe() {
      if (feed.version === null || client.state !== "connected") return;
      if (feed.subscribing) {
        feed.again = true; // the list or the connection changed: ask again after this one
        return;
      }
      feed.subscribing = true;
      feed.again = false;
      feed.buffered = [];
      const generation = list.generation;
      const ack = await client.request("leads:subscribe", { since: feed.version });
      feed.subscribing = false;
      if (generation !== list.generation || feed.again) return subscribe();
      if (!ack.ok) {
        const again = ["rate_limited", "timeout"].includes(ack.error?.code);
        els.foot.textContent = again ? "Live updates are catching up…"
          : `Live updates are off: ${ack.error?.message}. Reload the page to retry.`;
        if (again) setTimeout(subscribe, SUBSCRIBE_RETRY_MS);
        return;
      }
      if (ack.reset) return reload();
      const buffered = feed.buffered;
      feed.buffered = [];
      feed.live = true;
      for (const changes of [ack.changes || [], ...buffered]) applyChanges(changes);
    }

    function onChanges(ev) {
      if (feed.live) applyChanges(ev.changes || []);
      else if (feed.subscribing) feed.buffered.push(ev.changes || []);
    }

    // Applies changes in version order. Several servers writing one org publish
    // independently, so version n+1 can overtake n by a few ms: a change ahead of a
    // missing version waits in feed.early up to REORDER_MS; only a gap still open
    // then is a real loss, caught up with leads:subscribe {since}.
    function applyChanges(changes) {
      for (const change of changes) {
        if (change.version > feed.version) feed.early.set(change.version, change);
      }
      const applied = [];
      while (feed.early.has(feed.version + 1)) {
        const change = feed.early.get(feed.version + 1);
        feed.early.delete(change.version);
        applyChange(change);
        feed.version = change.version;
        applied.push(change);
      }
      if (applied.length) {
        table.refresh();
        showList();
        stats.refreshSoon();
        onApplied?.(applied);
      }
      watchGap(applied.length > 0);
    }

    // One timer per open gap: a gap that closed and a new one opening restart it.
    function watchGap(restart) {
      if (feed.gapTimer && (restart || !feed.early.size)) {
        clearTimeout(feed.gapTimer);
        feed.gapTimer = null;
      }
      if (!feed.early.size || feed.gapTimer) return;
      const generation = list.generation;
      feed.gapTimer = setTimeout(() => {
        feed.gapTimer = null;
        if (generation !== list.generation || !feed.early.size) return;
        feed.live = false; // catch up from feed.version; the ack fills the gap
        subscribe();
      }, REORDER_MS);
    }

    function closeGap() {
      clearTimeout(feed.gapTimer);
      feed.gapTimer = null;
      feed.early.clear();
    }

    function removeRow(lead) {
      let index = insertionIndex(list.rows, lead, compare);
      if (list.rows[index] !== lead) index = list.rows.indexOf(lead);
      if (index < 0) return;
      list.rows.splice(index, 1);
      list.byId.delete(lead.id);
      table.shiftedAbove(index, -1);
    }

    // A change lands where the current sort puts it: rows past the last loaded one come
    // with a later page, so they are not added here.
    function applyChange({ op, id, lead }) {
      const old = list.byId.get(id);
      if (old) removeRow(old);
      if (op === "delete" || !lead || !matches(lead)) return;
      const index = insertionIndex(list.rows, lead, compare);
      if (index >= list.rows.length && !list.complete) return;
      list.rows.splice(index, 0, lead);
      list.byId.set(lead.id, lead);
      table.shiftedAbove(index, 1);
      table.flash(lead.id);
    }

    // ---- states -------------------------------------------------------------------
    function showLoadError(err) {
      const retry = button("Try again", "secondary", reload);
      table.setOverlay(emptyState("Could not load your leads", `${err.message}. Check your connection, then try again.`, retry));
      els.foot.textContent = "";
    }

    function showList() {
      table.setRowCount(list.complete ? list.rows.length : null);
      if (list.rows.length > 0) table.setOverlay(null);
      else if (list.loading) table.setOverlay(el("p", "loading-state", "Loading your leads…"));
      else if (filtered()) {
        const clear = button("Clear search and filters", "secondary", () => setQuery({ q: "", hasPhone: false, hasEmail: false }));
        table.setOverlay(emptyState("No leads match", "Change the search or clear the filters to see more.", clear));
      } else {
        const ask = button("Ask the assistant", "secondary", onAskAssistant);
        table.setOverlay(emptyState("No saved leads yet",
          "Ask the assistant to find leads, then choose “Save all”. Saved leads appear here as they are saved.", ask));
      }
      showFoot();
    }

    function showFoot() {
      const n = list.rows.length;
      els.foot.replaceChildren();
      if (list.error) {
        els.foot.append(`Could not load more leads: ${list.error.message}. `, button("Retry", "link-button", () => {
          list.error = null;
          loadMore();
        }));
      } else if (list.loading && table.element.hasAttribute("aria-busy")) {
        els.foot.textContent = "Loading…";
      } else if (list.loading && list.loadedOnce) {
        els.foot.textContent = `${plural(n, "lead", "leads")} loaded, loading more…`;
      } else if (n && !list.complete) {
        els.foot.textContent = `${plural(n, "lead", "leads")} loaded; more load as you scroll.`;
      } else if (n) {
        els.foot.textContent = filtered() ? `${plural(n, "matching lead", "matching leads")}.` : `All ${plural(n, "lead", "leads")} shown.`;
      }
    }

    // ---- export of the current list ----------------------------------------------
    async function exportList() {
      els.exportButton.disabled = true;
      els.exportStatus.textContent = "Starting the export…";
      const filter = {};
      if (query.hasPhone) filter.hasPhone = true;
      if (query.hasEmail) filter.hasEmail = true;
      if (query.q) filter.q = query.q;
      try {
        const { jobId } = await client.api("/api/exports", { method: "POST", body: { filter, format: "csv" } });
        client.watchJob(jobId, showExport);
      } catch (err) {
        els.exportStatus.textContent = `Export failed: ${err.message}. Try again.`;
        els.exportButton.disabled = false;
      }
    }

    function showExport(update) {
      const status = els.exportStatus;
      if (update.event === "export:progress") {
        status.textContent = `Exporting… ${count(update.done)} of ${count(update.total)} rows`;
        return;
      }
      els.exportButton.disabled = false;
      if (update.event === "export:failed") {
        status.textContent = `Export failed: ${update.error?.message || "unknown error"}. Try again.`;
        return;
      }
      const a = link("Download CSV", httpUrl(update.url, client.base));
      if (a.nodeType === 1) a.setAttribute("download", "");
      status.replaceChildren(`CSV ready: ${plural(update.rows, "row", "rows")}. `, a);
    }

    // ---- wiring ---------------------------------------------------------------------
    const searchSoon = debounce(() => setQuery({ q: els.q.value.trim() }), SEARCH_DEBOUNCE_MS);
    els.q.addEventListener("input", searchSoon);
    els.q.addEventListener("keydown", (e) => {
      if (e.key === "Enter") {
        e.preventDefault();
        setQuery({ q: els.q.value.trim() });
      }
    });
    els.sort.addEventListener("change", () => setQuery({ sort: els.sort.value }));
    els.hasPhone.addEventListener("change", () => setQuery({ hasPhone: els.hasPhone.checked }));
    els.hasEmail.addEventListener("change", () => setQuery({ hasEmail: els.hasEmail.checked }));
    els.exportButton.addEventListener("click", exportList);
    client.on("leads:changes", onChanges);
    client.on("connect", () => {
      feed.live = false; // the server forgets the subscription with the connection
      subscribe();
    });

    return {
      reload,
      lead: (id) => list.byId.get(id),
      focusRow: (id) => table.focusRow(id),
      redraw: () => table.refresh(),
      // The whole list, newest first (after an import: its new leads on top).
      showNewest: () => setQuery({ sort: "createdAt:desc", q: "", hasPhone: false, hasEmail: false }),
    };
  }

  // ---- results of the current search --------------------------------------------------
  // A row is the search's person until that person is saved; from then on it shows the
  // saved lead (its current fields, as the saved leads' feed reports them), and after a
  // delete the person again. Rows keep the person's key (rowKey) through all of that.
  const personKey = (lead) => `${lead.source}:${lead.personId}`;
  const SAVED_ONLY = ["id", "createdAt", "updatedAt", "tags", "notes", "sources"];

  /**
   * @param {object} o
   * @param {(id: string) => object|undefined} [o.savedLead]  the current saved lead, where known
   * @param {(lead, key: string) => void} [o.onOpen]  a saved row was clicked
   * @param {(lead) => string} [o.rowState]  see createLeadTable
   */
  function createResults({ client, chat, onCount, savedLead, onOpen, rowState }) {
    const els = { title: $("results-title"), detail: $("results-detail"), progress: $("results-progress"),
      saveAll: $("save-all"), savePhone: $("save-phone"), foot: $("results-foot") };
    const table = ns.createLeadTable({ root: $("results-table"), label: "Search results",
      keyOf: (row) => row.rowKey, testId: "results", onOpen, rowState });
    // {callId, args, rows, people: rowKey -> [index, the person], keyById: lead id -> rowKey, ...}
    let search = null;

    function start(callId, args) {
      search = { callId, args: args || {}, rows: [], people: new Map(), keyById: new Map(), nextSeq: 0,
        done: false, gap: false, limit: args?.limit, failed: null };
      table.setRows(search.rows);
      table.scrollToTop();
      show();
    }

    function clear() {
      search = null;
      table.setRows([]);
      show();
    }

    // chat:tool of search_leads (live): a new search starts or reports progress.
    function onTool(ev, { live }) {
      if (!live || ev.name !== "search_leads") return false;
      const isNew = !search || search.callId !== ev.callId;
      if (isNew) start(ev.callId, ev.args);
      if (ev.progress?.total) search.limit = ev.progress.total;
      if (ev.status === "error") search.failed = ev.error?.message || "the search failed";
      show();
      return isNew;
    }

    function onBatch(ev) {
      if (ev.conversationId !== chat.conversationId) return;
      if (!search || search.callId !== ev.callId) start(ev.callId, null);
      if (ev.seq !== search.nextSeq) search.gap = true; // missed while the connection was down
      search.nextSeq = ev.seq + 1;
      for (const lead of ev.leads || []) {
        const rowKey = personKey(lead);
        if (search.people.has(rowKey)) continue;
        search.people.set(rowKey, [search.rows.length, lead]);
        if (lead.id) search.keyById.set(lead.id, rowKey);
        const saved = lead.id ? savedLead?.(lead.id) : null; // the lead as saved, if loaded here
        search.rows.push({ ...(saved || lead), rowKey });
      }
      if (ev.done) search.done = true;
      table.refresh();
      show();
    }

    // The row of a changed lead: by lead id, else by the person it was saved from.
    function rowKeyOf(id, lead) {
      if (search.keyById.has(id)) return search.keyById.get(id);
      const key = lead && personKey(lead);
      return key && search.people.has(key) ? key : null;
    }

    // Changes of saved leads, in version order (from the saved leads' feed): a saved
    // row shows the lead as it is now; a deleted one goes back to the person, not saved.
    function applyChanges(changes) {
      if (!search) return;
      let touched = false;
      for (const { op, id, lead } of changes) {
        const rowKey = rowKeyOf(id, lead);
        if (!rowKey) continue;
        const [index, person] = search.people.get(rowKey);
        if (op === "delete") {
          search.keyById.delete(id);
          const unsaved = { ...person, rowKey };
          for (const field of SAVED_ONLY) delete unsaved[field];
          search.rows[index] = unsaved;
        } else {
          search.keyById.set(lead.id, rowKey);
          search.rows[index] = { ...lead, rowKey };
        }
        table.flash(rowKey);
        touched = true;
      }
      if (!touched) return;
      table.refresh();
      show();
    }

    function describe(args) {
      const bits = [args.title, args.company && `at ${args.company}`, args.industry,
        args.location && `in ${args.location}`, args.hasPhone && "with phone", args.hasEmail && "with email"];
      return bits.filter(Boolean).join(" · ");
    }

    function show() {
      const rows = search?.rows || [];
      onCount(search ? rows.length : null);
      const busy = chat.generating || client.state !== "connected";
      const ready = Boolean(search?.done && rows.length && !search.failed);
      els.saveAll.disabled = !ready || busy;
      els.savePhone.disabled = !ready || busy || !rows.some((lead) => lead.phones?.length);
      els.progress.hidden = !search || search.done || Boolean(search.failed);
      if (search?.limit) {
        els.progress.max = search.limit;
        els.progress.value = rows.length;
      }
      table.setRowCount(search?.done ? rows.length : null);
      if (!search) {
        els.title.textContent = "No search yet";
        els.detail.textContent = "";
        table.setOverlay(emptyState("No search results yet",
          "Ask the assistant to find leads, for example “Find 50 CTOs in fintech with phone numbers”. Results stream in here as they are found."));
        els.foot.textContent = "";
        return;
      }
      const withPhone = rows.filter((lead) => lead.phones?.length).length;
      const withEmail = rows.filter((lead) => lead.emails?.length).length;
      const saved = rows.filter((lead) => lead.id).length;
      els.title.textContent = search.failed ? `Search failed: ${search.failed}`
        : search.done ? `${plural(rows.length, "result", "results")}` : `Searching… ${count(rows.length)} found`;
      els.detail.textContent = [describe(search.args), rows.length && `${count(withPhone)} with phone, ${count(withEmail)} with email`,
        saved && `${count(saved)} saved`].filter(Boolean).join(" · ");
      if (rows.length) table.setOverlay(null);
      else if (search.done) table.setOverlay(emptyState("Nobody matched", "Try a broader title, another industry or fewer filters."));
      else table.setOverlay(el("p", "loading-state", "Searching…"));
      els.foot.textContent = search.gap
        ? "Some results were missed while the connection was down. Ask again to see them all."
        : "";
    }

    els.saveAll.addEventListener("click", () => chat.send("save them"));
    els.savePhone.addEventListener("click", () => chat.send("save the ones with phones"));
    client.on("leads:batch", onBatch);
    client.on("state", show);
    show();
    return {
      onTool, clear, show, applyChanges,
      focusRow: (rowKey) => table.focusRow(rowKey),
      redraw: () => table.refresh(),
    };
  }

  ns.createSavedLeads = createSavedLeads;
  ns.createResults = createResults;
})(window);
