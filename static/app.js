"use strict";
// Leadstream web page: chat with the assistant, watch search results stream in,
// and keep the saved-leads table in sync with the org's live change feed.
// Wire contract: PROTOCOL.md. Server data is rendered with textContent only.

(() => {
  const PAGE_SIZE = 50;
  const ACK_TIMEOUT_MS = 10000;
  const SEND_ATTEMPTS = 3; // chat:send is idempotent per clientMessageId, so retrying is safe
  const STATS_DEBOUNCE_MS = 300;
  const FLASH_MS = 1500;

  // ---- DOM handles -----------------------------------------------------------
  const $ = (id) => document.getElementById(id);
  const ui = {
    notice: $("notice"), model: $("model"), conn: $("conn"),
    messages: $("messages"), composer: $("composer"), input: $("chat-input"),
    send: $("send"), stop: $("stop"),
    stats: $("stats"), resultsStatus: $("results-status"), results: $("results"),
    leads: $("leads"), leadsEmpty: $("leads-empty"), loadMore: $("load-more"),
  };

  // ---- State -------------------------------------------------------------------
  const state = {
    token: null,
    socket: null,
    conversationId: null,
    reply: null, // {messageId} while a reply we asked for is generating
    bubbles: new Map(), // messageId -> assistant bubble
    jobLines: new Map(), // export jobId -> chat line
    search: { searchId: null, count: 0, seen: new Set() },
    rows: new Map(), // saved lead id -> <tr>
    // live: subscribed and caught up; until then leads:changes events are buffered
    feed: { version: null, nextCursor: null, loading: null, live: false, buffered: [] },
  };

  // ---- Small helpers -------------------------------------------------------------
  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  // A banner; `kind` lets a later success clear only its own kind of problem.
  function setNotice(kind, ...parts) {
    ui.notice.dataset.kind = kind;
    ui.notice.replaceChildren(...parts);
    ui.notice.hidden = parts.length === 0;
  }

  function clearNotice(kind) {
    if (ui.notice.dataset.kind === kind) setNotice(kind);
  }

  // crypto.randomUUID needs a secure context; getRandomValues also works on plain http.
  function randomId() {
    const bytes = crypto.getRandomValues(new Uint8Array(16));
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  // Only http(s) links from server data; a bare "linkedin.com/in/x" gets https://.
  function httpUrl(value, base) {
    if (!value) return null;
    const text = (base || /^[a-z][a-z0-9+.-]*:/i.test(value)) ? value : `https://${value}`;
    try {
      const url = new URL(text, base);
      return url.protocol === "https:" || url.protocol === "http:" ? url.href : null;
    } catch {
      return null;
    }
  }

  const dateFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "short", timeStyle: "short" });

  // ---- REST and acknowledged Socket.IO requests ----------------------------------
  async function api(path) {
    const res = await fetch(path, { headers: { Authorization: `Bearer ${state.token}` } });
    const data = await res.json().catch(() => null);
    if (!res.ok) throw httpError(res.status, data);
    return data;
  }

  function httpError(status, body) {
    const err = new Error(body?.error?.message || `HTTP ${status}`);
    err.status = status;
    return err;
  }

  // Resolves to the ack, or to an error ack on timeout: callers handle one shape.
  async function request(event, payload) {
    try {
      const ack = await state.socket.timeout(ACK_TIMEOUT_MS).emitWithAck(event, payload);
      return ack && typeof ack === "object" ? ack : { ok: false, error: { code: "bad_ack", message: `Bad answer to ${event}` } };
    } catch {
      return { ok: false, error: { code: "timeout", message: `No answer from the server to ${event}` } };
    }
  }

  // ---- Auth: ?token=, else a dev token -------------------------------------------
  async function obtainToken() {
    const fromUrl = new URLSearchParams(location.search).get("token");
    if (fromUrl) return fromUrl;
    const body = JSON.stringify({ org: "demo", user: "demo" });
    const res = await fetch("/api/dev/token", { method: "POST", headers: { "Content-Type": "application/json" }, body });
    const data = await res.json().catch(() => null);
    if (!res.ok || !data?.token) throw httpError(res.status, data);
    return data.token;
  }

  function showTokenNeeded(err) {
    fail("auth", `This server needs a token (${err.message}). Create one with `,
      el("code", "", "leadstream token --org ORG --user USER"),
      ", then open ", el("code", "", "/?token=TOKEN"), ".");
  }

  // ---- Chat transcript -----------------------------------------------------------
  // Runs a DOM change and keeps the list pinned to the bottom if it was there.
  function keepScrolled(change) {
    const m = ui.messages;
    const atBottom = m.scrollHeight - m.scrollTop - m.clientHeight < 40;
    change();
    if (atBottom) m.scrollTop = m.scrollHeight;
  }

  function addLine(kind, ...parts) {
    const line = el("div", `msg msg-${kind}`);
    const speaker = { user: "You: ", assistant: "Assistant: " }[kind]; // for screen readers
    if (speaker) line.append(el("span", "visually-hidden", speaker));
    line.append(...parts);
    keepScrolled(() => ui.messages.append(line));
    return line;
  }

  function addError(error) {
    return addLine("error", `Error: ${error?.message || "something went wrong"}`);
  }

  function bubbleFor(messageId, conversationId) {
    let bubble = state.bubbles.get(messageId);
    if (bubble) return bubble;
    const steps = el("ul", "steps");
    const textEl = el("div", "text");
    const root = addLine("assistant", steps, textEl);
    root.setAttribute("aria-busy", "true");
    bubble = { messageId, conversationId, root, steps, textEl, length: 0,
      stepLines: new Map(), done: false, resuming: false };
    state.bubbles.set(messageId, bubble);
    return bubble;
  }

  // `text` starts at char `offset` (code points, as the server counts); append only what is new.
  function appendText(bubble, text, offset) {
    if (offset > bubble.length) {
      resumeReply(bubble); // a piece went missing
      return;
    }
    const chars = Array.from(text);
    const fresh = chars.slice(bubble.length - offset);
    if (fresh.length === 0) return;
    bubble.length += fresh.length;
    keepScrolled(() => bubble.textEl.append(fresh.join("")));
  }

  function stepText(ev) {
    const p = ev.progress || {};
    switch (ev.status) {
      case "started": return "running";
      case "progress": return `running (${p.done ?? 0}${p.total != null ? `/${p.total}` : ""})`;
      case "done": return ev.summary ? `done: ${ev.summary}` : "done";
      case "error": return `error: ${ev.error?.message || "failed"}`;
      default: return String(ev.status);
    }
  }

  function renderStep(bubble, ev) {
    let line = bubble.stepLines.get(ev.callId);
    if (!line) {
      line = el("li", "step");
      bubble.stepLines.set(ev.callId, line);
      keepScrolled(() => bubble.steps.append(line));
    }
    line.dataset.status = ev.status;
    line.textContent = `${ev.name} — ${stepText(ev)}`;
  }

  function finishBubble(bubble, stopped) {
    if (bubble.done) return;
    bubble.done = true;
    bubble.root.removeAttribute("aria-busy");
    if (stopped) bubble.root.append(el("span", "stopped", " (stopped)"));
    if (state.reply?.messageId === bubble.messageId) endReply();
  }

  // ---- Sending, stopping, resuming -----------------------------------------------
  function endReply() {
    const stopHadFocus = document.activeElement === ui.stop;
    state.reply = null;
    ui.send.disabled = false;
    ui.stop.hidden = true;
    if (stopHadFocus) ui.input.focus();
  }

  async function sendMessage() {
    const text = ui.input.value.trim();
    if (!text || state.reply || !state.socket) return;
    ui.input.value = "";
    ui.input.focus();
    addLine("user", text);
    state.reply = { messageId: null };
    ui.send.disabled = true;
    const payload = { text, clientMessageId: randomId() };
    if (state.conversationId) payload.conversationId = state.conversationId;
    let ack;
    for (let attempt = 0; attempt < SEND_ATTEMPTS; attempt += 1) {
      ack = await request("chat:send", payload);
      if (ack.ok || ack.error?.code !== "timeout") break;
    }
    if (!ack.ok) {
      addError(ack.error);
      endReply();
      if (!ui.input.value) ui.input.value = text; // give the text back for another try
      return;
    }
    state.conversationId = ack.conversationId;
    state.reply.messageId = ack.messageId;
    if (bubbleFor(ack.messageId, ack.conversationId).done) return endReply(); // chat:done overtook the ack
    ui.stop.hidden = false;
    ui.stop.disabled = false;
  }

  async function stopReply() {
    if (!state.reply?.messageId) return;
    ui.stop.disabled = true;
    const ack = await request("chat:stop", { conversationId: state.conversationId });
    ui.stop.disabled = false;
    if (!ack.ok) addError(ack.error);
    else if (!ack.stopped && state.reply) endReply(); // it had already finished
  }

  // After a reconnect or a gap in deltas: fetch the reply text from our length on.
  async function resumeReply(bubble) {
    if (bubble.resuming || bubble.done) return;
    bubble.resuming = true;
    const offset = bubble.length;
    const { conversationId, messageId } = bubble;
    const ack = await request("chat:resume", { conversationId, messageId, offset });
    bubble.resuming = false;
    if (!ack.ok) {
      addError(ack.error);
      return finishBubble(bubble, false);
    }
    appendText(bubble, ack.text || "", offset);
    if (ack.done) finishBubble(bubble, false);
  }

  // ---- Chat events -----------------------------------------------------------------
  // Events reach every tab of the user: follow only this tab's conversation, adopting
  // its id if events of a new conversation overtake the chat:send ack.
  function followsConversation(conversationId) {
    if (!state.conversationId && state.reply && conversationId) state.conversationId = conversationId;
    return Boolean(conversationId) && conversationId === state.conversationId;
  }

  function onDelta(ev) {
    if (!followsConversation(ev.conversationId)) return;
    appendText(bubbleFor(ev.messageId, ev.conversationId), ev.text || "", ev.offset ?? 0);
  }

  function onTool(ev) {
    if (!followsConversation(ev.conversationId)) return;
    renderStep(bubbleFor(ev.messageId, ev.conversationId), ev);
  }

  function onDone(ev) {
    if (!followsConversation(ev.conversationId)) return;
    finishBubble(bubbleFor(ev.messageId, ev.conversationId), Boolean(ev.stopped));
  }

  function onChatError(ev) {
    if (!followsConversation(ev.conversationId)) return;
    addError(ev.error);
    const bubble = ev.messageId && state.bubbles.get(ev.messageId);
    if (bubble) finishBubble(bubble, false);
    const reply = state.reply;
    if (reply && (!ev.messageId || !reply.messageId || ev.messageId === reply.messageId)) endReply();
  }

  // ---- Lead rows (both tables) -----------------------------------------------------
  function cell(...children) {
    const td = el("td");
    td.append(...children);
    return td;
  }

  function link(text, href) {
    if (!text) return "";
    if (!href) return String(text);
    const a = el("a", "", text);
    a.href = href;
    return a;
  }

  function linkedinLink(lead) {
    const href = httpUrl(lead.linkedin);
    if (!href) return lead.linkedin || ""; // no usable URL: show the text as it is
    const a = link("Profile", href);
    a.target = "_blank";
    a.rel = "noopener noreferrer";
    a.setAttribute("aria-label", `${lead.name || "Lead"} on LinkedIn (opens in a new tab)`);
    return a;
  }

  function addedTime(createdAt) {
    const date = new Date(createdAt || NaN);
    if (Number.isNaN(date.getTime())) return "";
    const time = el("time", "", dateFormat.format(date));
    time.dateTime = createdAt;
    return time;
  }

  function leadRow(lead) {
    const tr = el("tr");
    if (lead.id) tr.dataset.id = lead.id;
    const name = el("th", "", lead.name || "—");
    name.scope = "row";
    const company = cell(el("div", "", lead.company || ""));
    if (lead.title) company.append(el("div", "sub", lead.title));
    const phone = lead.phones?.[0];
    const email = lead.emails?.[0];
    tr.append(name, company,
      cell(link(phone, phone && `tel:${phone.replace(/[^\d+]/g, "")}`)),
      cell(link(email, email && `mailto:${email}`)),
      cell(linkedinLink(lead)),
      cell(addedTime(lead.createdAt)));
    return tr;
  }

  function flash(row) {
    row.classList.add("changed");
    setTimeout(() => row.classList.remove("changed"), FLASH_MS);
  }

  // ---- Search results (leads:batch) ------------------------------------------------
  function onBatch(ev) {
    if (!followsConversation(ev.conversationId)) return;
    const search = state.search;
    if (ev.searchId !== search.searchId || (ev.seq === 0 && !search.seen.has(0))) {
      Object.assign(search, { searchId: ev.searchId, count: 0, seen: new Set() });
      ui.results.replaceChildren();
    }
    if (search.seen.has(ev.seq)) return; // the same batch delivered twice
    search.seen.add(ev.seq);
    const leads = ev.leads || [];
    ui.results.append(...leads.map(leadRow));
    search.count += leads.length;
    const of = ev.total != null ? ` of ${ev.total}` : "";
    ui.resultsStatus.textContent = ev.done ? `${search.count} found` : `${search.count} leads received${of}`;
  }

  // ---- Stats -------------------------------------------------------------------------
  let statsTimer = 0;

  function scheduleStatsRefresh() {
    clearTimeout(statsTimer);
    statsTimer = setTimeout(refreshStats, STATS_DEBOUNCE_MS);
  }

  async function refreshStats() {
    try {
      const s = await api("/api/leads/stats");
      const n = (v) => Number(v || 0).toLocaleString();
      ui.stats.textContent = `${n(s.total)} total · ${n(s.withEmail)} with email · ${n(s.withPhone)} with phone`;
    } catch (err) {
      ui.stats.textContent = `Stats unavailable: ${err.message}`;
    }
  }

  // ---- Saved leads: REST pages -------------------------------------------------------
  function appendSavedLeads(leads) {
    for (const lead of leads || []) {
      if (!lead.id || state.rows.has(lead.id)) continue; // already shown (e.g. inserted live)
      const row = leadRow(lead);
      state.rows.set(lead.id, row);
      ui.leads.append(row);
    }
  }

  function updateListControls() {
    ui.leadsEmpty.hidden = state.rows.size > 0 || state.feed.version === null;
    ui.loadMore.hidden = !state.feed.nextCursor;
  }

  // Loads the first page, then (re)subscribes to the change feed from its version.
  function reloadSavedLeads() {
    const feed = state.feed;
    if (feed.loading) return feed.loading;
    feed.live = false;
    feed.loading = (async () => {
      try {
        const page = await api(`/api/leads?limit=${PAGE_SIZE}`);
        state.rows.clear();
        ui.leads.replaceChildren();
        appendSavedLeads(page.leads);
        Object.assign(feed, { nextCursor: page.nextCursor, version: page.version });
        clearNotice("leads");
      } catch (err) {
        setNotice("leads", `Could not load saved leads: ${err.message}`);
      }
      feed.loading = null;
      updateListControls();
      refreshStats();
      await subscribeFeed();
    })();
    return feed.loading;
  }

  async function loadMore() {
    const cursor = state.feed.nextCursor;
    if (!cursor || ui.loadMore.getAttribute("aria-busy") === "true") return;
    ui.loadMore.setAttribute("aria-busy", "true"); // not `disabled`: that would drop keyboard focus
    try {
      const page = await api(`/api/leads?limit=${PAGE_SIZE}&cursor=${encodeURIComponent(cursor)}`);
      appendSavedLeads(page.leads);
      state.feed.nextCursor = page.nextCursor;
    } catch (err) {
      setNotice("leads", `Could not load more leads: ${err.message}`);
    }
    ui.loadMore.removeAttribute("aria-busy");
    if (!state.feed.nextCursor && document.activeElement === ui.loadMore) ui.leads.closest(".table-wrap").focus();
    updateListControls();
  }

  // ---- Saved leads: live change feed -------------------------------------------------
  async function subscribeFeed() {
    const feed = state.feed;
    if (feed.loading || feed.version === null || !state.socket?.connected) return;
    const ack = await request("leads:subscribe", { since: feed.version });
    if (!ack.ok) return setNotice("feed", `Live lead updates unavailable: ${ack.error?.message}`);
    clearNotice("feed");
    if (ack.reset) return reloadSavedLeads();
    const buffered = feed.buffered;
    feed.buffered = [];
    feed.live = true;
    for (const changes of [ack.changes, ...buffered.map((ev) => ev.changes)]) {
      if (!applyChanges(changes || [])) return;
    }
  }

  function applyChange({ op, id, lead }) {
    const row = state.rows.get(id);
    if (op === "delete") {
      row?.remove();
      state.rows.delete(id);
      return;
    }
    if (!lead || (!row && op !== "insert")) return; // an update to a row not loaded yet
    const fresh = leadRow(lead);
    if (row) row.replaceWith(fresh);
    else ui.leads.prepend(fresh);
    state.rows.set(id, fresh);
    flash(fresh);
  }

  // Applies changes in version order; false when a gap forced a reload.
  function applyChanges(changes) {
    const feed = state.feed;
    let applied = false;
    for (const change of changes) {
      if (change.version <= feed.version) continue; // seen already
      if (change.version > feed.version + 1) {
        reloadSavedLeads();
        return false;
      }
      applyChange(change);
      feed.version = change.version;
      applied = true;
    }
    if (applied) {
      updateListControls();
      scheduleStatsRefresh();
    }
    return true;
  }

  function onLeadChanges(ev) {
    if (state.feed.live) applyChanges(ev.changes || []);
    else state.feed.buffered.push(ev);
  }

  // ---- Exports -------------------------------------------------------------------------
  function jobLine(jobId) {
    if (!state.jobLines.has(jobId)) state.jobLines.set(jobId, addLine("system"));
    return state.jobLines.get(jobId);
  }

  function onExportProgress({ jobId, done, total }) {
    jobLine(jobId).replaceChildren(`Exporting… ${done ?? 0} of ${total ?? "?"} rows`);
  }

  function onExportReady({ jobId, rows, url }) {
    const line = jobLine(jobId);
    const href = httpUrl(url, location.href);
    keepScrolled(() => line.replaceChildren(`Export ready: ${rows} rows. `));
    if (!href) return;
    const a = link("Download CSV", href);
    a.setAttribute("download", "");
    keepScrolled(() => line.append(a));
  }

  function onExportFailed({ jobId, error }) {
    const line = jobLine(jobId);
    line.className = "msg msg-error";
    line.replaceChildren(`Export failed: ${error?.message || "unknown error"}`);
  }

  // ---- Connection ----------------------------------------------------------------------
  function setConn(name) {
    ui.conn.dataset.state = name;
    ui.conn.textContent = name;
  }

  function onConnect() {
    setConn("connected");
    clearNotice("conn");
    subscribeFeed(); // on a reconnect: since the last version seen
    for (const bubble of state.bubbles.values()) if (!bubble.done) resumeReply(bubble);
  }

  function connect() {
    const socket = io({ auth: { token: state.token }, transports: ["websocket"] });
    state.socket = socket;
    socket.on("connect", onConnect);
    socket.on("disconnect", () => {
      state.feed.live = false; // the server forgets the subscription with the connection
      setConn(socket.active ? "reconnecting" : "offline");
    });
    socket.on("connect_error", (err) => {
      setConn(socket.active ? "reconnecting" : "offline");
      setNotice("conn", `Cannot connect: ${err.data?.message || err.message}`);
    });
    socket.io.on("reconnect_attempt", () => setConn("reconnecting"));
    socket.io.on("reconnect_failed", () => setConn("offline"));
    const handlers = {
      "chat:delta": onDelta, "chat:tool": onTool, "chat:done": onDone, "chat:error": onChatError,
      "leads:batch": onBatch, "leads:changes": onLeadChanges,
      "export:progress": onExportProgress, "export:ready": onExportReady, "export:failed": onExportFailed,
    };
    for (const [event, handler] of Object.entries(handlers)) socket.on(event, handler);
  }

  // ---- Start-up --------------------------------------------------------------------------
  function wireUi() {
    ui.composer.addEventListener("submit", (e) => {
      e.preventDefault();
      sendMessage();
    });
    ui.input.addEventListener("keydown", (e) => {
      const send = e.key === "Enter" && !e.shiftKey && !e.isComposing;
      const stop = e.key === "Escape" && state.reply;
      if (send || stop) e.preventDefault();
      if (send) sendMessage();
      if (stop) stopReply();
    });
    ui.stop.addEventListener("click", stopReply);
    ui.loadMore.addEventListener("click", loadMore);
  }

  async function loadInfo() {
    try {
      const info = await (await fetch("/api/info")).json();
      ui.model.textContent = `Model: ${info.model || "unknown"}`;
    } catch {
      ui.model.textContent = "Model: unknown";
    }
  }

  function fail(kind, ...message) {
    setNotice(kind, ...message);
    ui.input.disabled = true;
    ui.send.disabled = true;
    ui.stats.textContent = "";
  }

  async function start() {
    wireUi();
    loadInfo();
    if (typeof io !== "function") return fail("conn", "The Socket.IO client did not load (/static/socket.io.min.js).");
    try {
      state.token = await obtainToken();
    } catch (err) {
      if (err.status >= 400 && err.status < 500) return showTokenNeeded(err);
      return fail("auth", `Could not get a token: ${err.message}`);
    }
    connect();
    reloadSavedLeads();
  }

  start();
})();
