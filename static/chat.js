"use strict";
// The chat pane: streamed replies, tool steps as cards, Stop, the user's
// conversations, and recovery after a dropped connection (chat:resume).
// Used by the page and the widget: Leadstream.createChat({root, client, ...}).

(function (global) {
  const ns = global.Leadstream;
  const { el, button, link, timeElement, count, plural, randomId } = ns.ui;
  const SEND_ATTEMPTS = 3; // chat:send is idempotent per clientMessageId, so retrying is safe
  const MESSAGE_PAGES = 10;
  const EXAMPLES = [
    "Find 100 CTOs in fintech with phone numbers",
    "Find 20 VPs of sales in SaaS in London",
    "Export my saved leads to CSV",
  ];
  const ERROR_ADVICE = {
    rate_limited: "You are sending too fast. Wait a few seconds, then try again.",
    budget_exceeded: "The usage budget is spent. Ask an admin to raise it.",
    model_unavailable: "The model is unavailable right now. Try again in a minute.",
    conversation_busy: "A reply is still being written. Wait for it, or press Stop.",
    timeout: "Check the connection, then try again.",
  };
  const CONNECTION_TEXT = {
    connecting: "Connecting…", connected: "Connected", reconnecting: "Reconnecting…", offline: "Offline",
  };

  // Static markup only (no server data): server text goes in through textContent.
  function template(p) {
    return `
<header class="lc-head">
  <div class="lc-head-text">
    <h2 class="lc-title" id="${p}-title">Assistant</h2>
    <span class="lc-conn" data-part="conn" data-state="connecting" role="status" data-testid="conn">Connecting…</span>
  </div>
  <div class="lc-head-actions">
    <button type="button" class="lc-ghost" data-part="history" aria-expanded="false" aria-controls="${p}-history">Chats</button>
    <button type="button" class="lc-ghost" data-part="new">New chat</button>
  </div>
</header>
<p class="lc-problem" data-part="problem" role="alert" hidden></p>
<section class="lc-history" id="${p}-history" data-part="history-panel" aria-labelledby="${p}-history-title" hidden>
  <h3 class="lc-history-title" id="${p}-history-title">Your conversations</h3>
  <p class="lc-muted" data-part="history-status" role="status"></p>
  <ul class="lc-history-list" data-part="history-list"></ul>
  <button type="button" class="lc-ghost" data-part="history-more" hidden>Show older</button>
</section>
<div class="lc-log" data-part="log" role="log" aria-labelledby="${p}-title" tabindex="0" data-testid="messages"></div>
<form class="lc-composer" data-part="composer">
  <label class="lc-label" for="${p}-input">Message the assistant</label>
  <div class="lc-compose-row">
    <textarea id="${p}-input" data-part="input" rows="2" aria-describedby="${p}-hint" data-testid="chat-input"
      placeholder="e.g. Find 100 CTOs in fintech with phone numbers"></textarea>
    <button type="submit" class="lc-send" data-part="send" data-testid="send">Send</button>
    <button type="button" class="lc-stop" data-part="stop" data-testid="stop" hidden>Stop</button>
  </div>
  <p class="lc-hint" id="${p}-hint" data-part="hint">Enter sends, Shift+Enter adds a line, Escape stops a reply.</p>
</form>`;
  }

  /**
   * @param {object} o
   * @param {HTMLElement} o.root  element the pane is drawn into (emptied)
   * @param {object} o.client  from Leadstream.createClient
   * @param {string} [o.idPrefix]  prefix of element ids, unique in the document or shadow root
   * @param {Storage} [o.storage]  remembers the open conversation under `storageKey`
   * @param {Node[]} [o.extraActions]  more header buttons (the widget's Close)
   * @param {object} [o.hooks]  onTool(ev, {live, conversationId}), onConversation(id),
   *   onGenerating(on), onShowResults() (adds "Show results" to search cards)
   */
  function createChat({ root, client, idPrefix = "lc", storage = null, storageKey = "", extraActions = [], hooks = {} }) {
    root.classList.add("lc");
    root.innerHTML = template(idPrefix);
    const part = (name) => root.querySelector(`[data-part="${name}"]`);
    root.querySelector(".lc-head-actions").append(...extraActions);
    const ui = {
      conn: part("conn"), problem: part("problem"), historyToggle: part("history"), newChat: part("new"),
      historyPanel: part("history-panel"), historyStatus: part("history-status"), historyList: part("history-list"),
      historyMore: part("history-more"), log: part("log"), composer: part("composer"), input: part("input"),
      send: part("send"), stop: part("stop"), hint: part("hint"),
    };
    const state = {
      conversationId: null,
      pending: null, // {bubble, stopWanted} while chat:send waits for its ack
      active: null, // the bubble of the reply this tab asked for, while it is generating
      bubbles: new Map(), // messageId -> bubble
      awaitingExport: [], // export cards whose job id has not arrived yet
      latestSearch: null, // the search card whose results "save them" refers to
      generation: 0, // bumps when the transcript is replaced, so late answers are dropped
      historyCursor: null,
    };

    // ---- transcript -------------------------------------------------------------
    function keepScrolled(change) {
      const log = ui.log;
      const atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 48;
      change();
      if (atBottom) log.scrollTop = log.scrollHeight;
    }

    function showEmpty() {
      const box = el("div", "lc-empty");
      box.append(el("p", "lc-empty-title", "Ask for leads in plain words."),
        el("p", "lc-muted", "Results stream in as they are found. Try one of these:"));
      const list = el("ul", "lc-examples");
      for (const text of EXAMPLES) {
        const item = el("li");
        item.append(button(text, "lc-example", () => send(text)));
        list.append(item);
      }
      box.append(list);
      ui.log.replaceChildren(box);
    }

    function addMessage(kind, speaker, ...children) {
      ui.log.querySelector(".lc-empty, .lc-loading")?.remove();
      const row = el("div", `lc-msg lc-${kind}`);
      row.append(el("span", "lc-vh", speaker), ...children);
      keepScrolled(() => ui.log.append(row));
      return row;
    }

    function addUserMessage(text) {
      addMessage("user", "You said: ", el("p", "lc-text", text));
    }

    function newBubble(messageId, conversationId) {
      const cards = el("ul", "lc-cards");
      cards.setAttribute("aria-label", "Steps");
      const textEl = el("div", "lc-text");
      const textNode = document.createTextNode("");
      textEl.append(textNode);
      const root = addMessage("assistant", "Assistant: ", cards, textEl);
      root.setAttribute("aria-busy", "true");
      const bubble = { messageId, conversationId, root, cards, textEl, textNode, length: 0,
        cardsByCall: new Map(), done: false, resuming: false };
      if (messageId) state.bubbles.set(messageId, bubble);
      return bubble;
    }

    function adopt(bubble, messageId) {
      if (bubble.messageId) return;
      bubble.messageId = messageId;
      state.bubbles.set(messageId, bubble);
    }

    // `text` starts at char `offset` (code points, as the server counts): add only what is new.
    function appendText(bubble, text, offset) {
      if (offset > bubble.length) return resume(bubble); // a piece went missing
      const fresh = Array.from(text).slice(bubble.length - offset);
      if (fresh.length === 0) return;
      bubble.length += fresh.length;
      keepScrolled(() => bubble.textNode.appendData(fresh.join("")));
    }

    function addNote(bubble, className, text) {
      keepScrolled(() => bubble.root.append(el("p", `lc-note ${className}`, text)));
    }

    function finish(bubble, outcome) {
      if (bubble.done) return;
      bubble.done = true;
      bubble.root.removeAttribute("aria-busy");
      if (outcome === "stopped") addNote(bubble, "lc-stopped", "Stopped. Ask again to continue.");
      if (outcome === "failed") addNote(bubble, "lc-failed", "This reply failed. Try sending it again.");
      if (state.active === bubble) endGenerating();
    }

    function errorText(error) {
      const message = (error?.message || "Something went wrong").replace(/[.\s]+$/, "");
      return `${message}. ${ERROR_ADVICE[error?.code] || "You can try again."}`;
    }

    // ---- tool cards ---------------------------------------------------------------
    const TOOL_LABELS = {
      search_leads: ["Searching leads…", "Search failed"],
      save_leads: ["Saving leads…", "Saving failed"],
      export_leads: ["Preparing the CSV export…", "Export failed"],
      lookup_profile: ["Looking up the profile…", "Lookup failed"],
    };

    function describeSearch(args = {}) {
      const bits = [args.title, args.seniority, args.company && `at ${args.company}`, args.industry,
        args.location && `in ${args.location}`, args.keywords, args.hasPhone && "with phone",
        args.hasEmail && "with email", args.limit && `up to ${args.limit}`];
      return bits.filter(Boolean).join(" · ");
    }

    function sentence(summary) {
      return summary ? summary[0].toUpperCase() + summary.slice(1) : "Done";
    }

    function cardFor(bubble, callId, name) {
      let card = bubble.cardsByCall.get(callId);
      if (card) return card;
      const li = el("li", "lc-card");
      li.dataset.tool = name;
      const title = el("p", "lc-card-title");
      const detail = el("p", "lc-card-detail");
      const progress = el("progress", "lc-progress");
      progress.setAttribute("aria-label", `${name.replace("_", " ")} progress`);
      const actions = el("div", "lc-card-actions");
      li.append(title, detail, progress, actions);
      card = { li, name, callId, title, detail, progress, actions, jobId: null, bubble };
      bubble.cardsByCall.set(callId, card);
      keepScrolled(() => bubble.cards.append(li));
      return card;
    }

    function setProgress(card, done, total) {
      card.progress.hidden = false;
      if (total) {
        card.progress.max = total;
        card.progress.value = Math.min(done || 0, total);
      } else {
        card.progress.removeAttribute("value"); // indeterminate
      }
    }

    // One chat:tool event (or a stored toolCalls entry) drawn on its card.
    function renderTool(bubble, ev, live) {
      const card = cardFor(bubble, ev.callId, ev.name);
      if (card.jobId) return; // an export card already follows its job
      const [running, failed] = TOOL_LABELS[ev.name] || [`Running ${ev.name}…`, `${ev.name} failed`];
      card.li.dataset.status = ev.status;
      card.actions.replaceChildren();
      if (ev.name === "search_leads") card.detail.textContent = describeSearch(ev.args);
      if (ev.status === "error") {
        card.title.textContent = `${failed}: ${ev.error?.message || "unknown error"}`;
        card.progress.hidden = true;
      } else if (ev.status === "done") {
        card.title.textContent = ev.name === "export_leads" ? "Export started" : sentence(ev.summary);
        card.progress.hidden = true;
        toolDone(card, ev, live);
      } else {
        const p = ev.progress || {};
        card.title.textContent = ev.name === "search_leads" && p.done != null
          ? `Searching leads… ${count(p.done)} found${p.total ? ` of ${count(p.total)}` : ""}`
          : running;
        setProgress(card, p.done, p.total);
      }
      hooks.onTool?.(ev, { live, conversationId: bubble.conversationId });
    }

    function toolDone(card, ev, live) {
      if (ev.name === "search_leads") return markLatestSearch(card);
      if (ev.name !== "export_leads") return;
      const jobId = ev.result?.jobId;
      if (jobId) return followExport(card, jobId, !live);
      if (live) awaitExport(card);
    }

    function markLatestSearch(card) {
      if (state.latestSearch && state.latestSearch !== card) state.latestSearch.actions.replaceChildren();
      state.latestSearch = card;
      if (hooks.onShowResults) card.actions.append(button("Show results", "lc-chip", hooks.onShowResults));
      card.actions.append(
        button("Save all", "lc-chip", () => send("save them")),
        button("Save with phone", "lc-chip", () => send("save the ones with phones")),
      );
    }

    // A server before protocol 2 sends no jobId in chat:tool: pair the card with the next unclaimed job.
    function awaitExport(card) {
      const jobId = client.takeOrphanJob();
      if (jobId) followExport(card, jobId, false);
      else state.awaitingExport.push(card);
    }

    function onOrphanJob() {
      if (state.awaitingExport.length === 0) return;
      const jobId = client.takeOrphanJob();
      if (jobId) followExport(state.awaitingExport.shift(), jobId, false);
    }

    function followExport(card, jobId, askServer) {
      card.jobId = jobId;
      card.title.textContent = "Exporting…";
      client.watchJob(jobId, (update) => renderExport(card, update));
      if (!askServer) return;
      client.api(`/api/jobs/${encodeURIComponent(jobId)}`).then((info) => {
        const update = client.jobUpdate(info);
        if (update) renderExport(card, update);
      }, () => { card.title.textContent = "Export started (its status is no longer available)"; });
    }

    function renderExport(card, update) {
      card.li.dataset.status = update.event === "export:failed" ? "error" : "done";
      if (update.event === "export:progress") {
        card.title.textContent = `Exporting… ${update.done ?? 0} of ${update.total ?? "?"} rows`;
        return setProgress(card, update.done, update.total);
      }
      card.progress.hidden = true;
      if (update.event === "export:failed") {
        card.title.textContent = `Export failed: ${update.error?.message || "unknown error"}. Try again.`;
        return;
      }
      card.title.textContent = `CSV ready: ${plural(update.rows, "row", "rows")}`;
      const a = link("Download CSV", ns.ui.httpUrl(update.url, client.base));
      if (a.nodeType !== 1) return;
      a.className = "lc-download";
      a.setAttribute("download", "");
      keepScrolled(() => card.actions.replaceChildren(a));
    }

    // ---- sending, stopping, resuming ----------------------------------------------
    const isGenerating = () => Boolean(state.pending || state.active);

    function setGenerating(on) {
      const stopHadFocus = root.getRootNode().activeElement === ui.stop;
      ui.send.hidden = on;
      ui.stop.hidden = !on;
      ui.stop.disabled = false;
      ui.stop.textContent = "Stop";
      if (stopHadFocus && !on) ui.input.focus();
      updateComposer();
      hooks.onGenerating?.(on);
    }

    function endGenerating() {
      state.pending = null;
      state.active = null;
      setGenerating(false);
    }

    function updateComposer() {
      const online = client.state === "connected";
      ui.send.disabled = !online;
      ui.hint.textContent = online
        ? "Enter sends, Shift+Enter adds a line, Escape stops a reply."
        : "Waiting for the connection; you can keep typing.";
    }

    async function send(text) {
      text = (text || "").trim();
      if (!text || isGenerating() || client.state !== "connected") return false;
      closeHistory(false);
      addUserMessage(text);
      const bubble = newBubble(null, state.conversationId);
      state.pending = { bubble, stopWanted: false };
      state.active = bubble;
      setGenerating(true);
      const payload = { text, clientMessageId: randomId() };
      if (state.conversationId) payload.conversationId = state.conversationId;
      const generation = state.generation;
      let ack;
      for (let attempt = 0; attempt < SEND_ATTEMPTS; attempt += 1) {
        ack = await client.request("chat:send", payload);
        if (ack.ok || ack.error?.code !== "timeout") break;
      }
      if (generation !== state.generation) return ack.ok; // the user moved to another conversation
      const stopWanted = state.pending?.stopWanted;
      state.pending = null;
      if (!ack.ok) {
        addNote(bubble, "lc-failed", `Not sent: ${errorText(ack.error)}`);
        finish(bubble, null);
        if (!ui.input.value) ui.input.value = text; // give the text back for another try
        return false;
      }
      setConversation(ack.conversationId);
      bubble.conversationId = ack.conversationId;
      adopt(bubble, ack.messageId);
      if (bubble.done) endGenerating(); // chat:done overtook the ack
      else if (stopWanted) stop();
      return true;
    }

    async function stop() {
      if (!isGenerating()) return;
      ui.stop.disabled = true;
      ui.stop.textContent = "Stopping…";
      if (state.pending) {
        state.pending.stopWanted = true; // sent once the ack names the conversation
        return;
      }
      const ack = await client.request("chat:stop", { conversationId: state.conversationId });
      if (!ack.ok) {
        ui.stop.disabled = false;
        ui.stop.textContent = "Stop";
        if (state.active) addNote(state.active, "lc-failed", `Could not stop: ${errorText(ack.error)}`);
        return;
      }
      // Stopped: chat:done {stopped: true} finishes the bubble. Not stopped: the reply had
      // already ended and its last events are on their way.
      if (!ack.stopped || state.active?.done) endGenerating();
    }

    // Fetches reply text from what we have on, after a reconnect or a gap in deltas.
    async function resume(bubble) {
      if (bubble.resuming || bubble.done || !bubble.messageId) return;
      bubble.resuming = true;
      const offset = bubble.length;
      const ack = await client.request("chat:resume", {
        conversationId: bubble.conversationId, messageId: bubble.messageId, offset,
      });
      bubble.resuming = false;
      if (!ack.ok) {
        if (ack.error?.code === "timeout") return; // the next reconnect tries again
        addNote(bubble, "lc-failed", `Could not recover this reply: ${errorText(ack.error)}`);
        return finish(bubble, null);
      }
      appendText(bubble, ack.text || "", offset);
      if (ack.done) syncFinished(bubble);
    }

    // A reply that ended while we were away: its tool steps and outcome come from REST.
    async function syncFinished(bubble) {
      try {
        const messages = await fetchMessages(bubble.conversationId);
        const message = messages.find((m) => m.id === bubble.messageId);
        for (const call of message?.toolCalls || []) renderTool(bubble, toolEvent(call), false);
        finish(bubble, message?.status);
      } catch {
        finish(bubble, null);
      }
    }

    // ---- server events -------------------------------------------------------------
    // Events reach every tab of the user: follow only this pane's conversation, adopting
    // its id when events of a new conversation overtake the chat:send ack.
    function follows(conversationId) {
      if (!state.conversationId && state.pending && conversationId) setConversation(conversationId);
      return Boolean(conversationId) && conversationId === state.conversationId;
    }

    function bubbleFor(ev) {
      if (!follows(ev.conversationId) || !ev.messageId) return null;
      const known = state.bubbles.get(ev.messageId);
      if (known) return known;
      const pending = state.pending?.bubble;
      if (pending && !pending.messageId) {
        adopt(pending, ev.messageId);
        pending.conversationId = ev.conversationId;
        return pending;
      }
      return newBubble(ev.messageId, ev.conversationId); // a reply asked for in another tab
    }

    function onDelta(ev) {
      const bubble = bubbleFor(ev);
      if (bubble) appendText(bubble, ev.text || "", ev.offset ?? 0);
    }

    function onTool(ev) {
      const bubble = bubbleFor(ev);
      if (bubble) renderTool(bubble, ev, true);
    }

    function onDone(ev) {
      const bubble = bubbleFor(ev);
      if (bubble) finish(bubble, ev.stopped ? "stopped" : null);
    }

    function onError(ev) {
      const bubble = ev.messageId ? bubbleFor(ev) : follows(ev.conversationId) && state.active;
      if (!bubble) return;
      addNote(bubble, "lc-failed", errorText(ev.error));
      finish(bubble, null);
    }

    function onConnection({ state: connection, problem }) {
      ui.conn.dataset.state = connection;
      ui.conn.textContent = CONNECTION_TEXT[connection] || connection;
      let text = problem;
      if (!text && connection === "reconnecting") text = "Connection lost. Reconnecting; a reply in progress will pick up where it stopped.";
      if (!text && connection === "offline") text = "Offline. Check that the server is running, then reload the page.";
      ui.problem.textContent = text;
      ui.problem.hidden = !text || connection === "connected";
      updateComposer();
    }

    function onReconnect() {
      for (const bubble of state.bubbles.values()) if (!bubble.done) resume(bubble);
      if (!ui.historyPanel.hidden) loadHistory(false);
    }

    // ---- conversations ---------------------------------------------------------------
    function setConversation(id) {
      if (state.conversationId === id) return;
      state.conversationId = id;
      try {
        if (storage && id) storage.setItem(storageKey, id);
        else if (storage) storage.removeItem(storageKey);
      } catch {
        // storage can be disabled; the conversation simply is not remembered
      }
      hooks.onConversation?.(id);
    }

    function resetTranscript() {
      state.generation += 1;
      state.bubbles.clear();
      state.awaitingExport = [];
      state.latestSearch = null;
      endGenerating();
    }

    function newConversation() {
      resetTranscript();
      setConversation(null);
      showEmpty();
      closeHistory(false);
      ui.input.focus();
    }

    async function fetchMessages(conversationId) {
      const all = [];
      let cursor = null;
      for (let page = 0; page < MESSAGE_PAGES; page += 1) {
        const query = `limit=200${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`;
        const data = await client.api(`/api/conversations/${encodeURIComponent(conversationId)}/messages?${query}`);
        all.push(...(data.messages || []));
        cursor = data.nextCursor;
        if (!cursor) break;
      }
      return all;
    }

    function toolEvent(call) {
      return { callId: call.callId, name: call.name, args: call.args, status: call.status === "error" ? "error" : "done",
        summary: call.summary, error: call.error, result: call.result };
    }

    function renderStored(message, conversationId) {
      if (message.role === "user") return addUserMessage(message.text || "");
      const bubble = newBubble(message.id, conversationId);
      for (const call of message.toolCalls || []) renderTool(bubble, toolEvent(call), false);
      appendText(bubble, message.text || "", 0);
      if (message.status === "streaming") {
        state.active = bubble; // still being written (another tab asked): Stop applies to it
        setGenerating(true);
        return resume(bubble);
      }
      finish(bubble, message.status === "stopped" || message.status === "failed" ? message.status : null);
    }

    async function open(conversationId) {
      resetTranscript();
      const generation = state.generation;
      setConversation(conversationId);
      closeHistory(false);
      ui.log.replaceChildren(el("p", "lc-loading lc-muted", "Loading the conversation…"));
      let messages;
      try {
        messages = await fetchMessages(conversationId);
      } catch (err) {
        if (generation !== state.generation) return;
        if (err.status === 404 || err.status === 403) return newConversation();
        ui.log.replaceChildren(el("p", "lc-loading lc-failed", `Could not load this conversation: ${err.message}. `));
        ui.log.firstChild.append(button("Try again", "lc-chip", () => open(conversationId)));
        return;
      }
      if (generation !== state.generation) return;
      ui.log.replaceChildren();
      for (const message of messages) renderStored(message, conversationId);
      if (messages.length === 0) showEmpty();
      ui.log.scrollTop = ui.log.scrollHeight;
    }

    function closeHistory(returnFocus) {
      if (ui.historyPanel.hidden) return;
      ui.historyPanel.hidden = true;
      ui.historyToggle.setAttribute("aria-expanded", "false");
      if (returnFocus) ui.historyToggle.focus();
    }

    function toggleHistory() {
      if (!ui.historyPanel.hidden) return closeHistory(true);
      ui.historyPanel.hidden = false;
      ui.historyToggle.setAttribute("aria-expanded", "true");
      loadHistory(false, true);
    }

    function conversationItem(conversation) {
      const item = el("li");
      const b = button("", "lc-conversation", () => open(conversation.id));
      b.append(el("span", "lc-conversation-title", conversation.title || "Untitled"), timeElement(conversation.updatedAt));
      if (conversation.id === state.conversationId) b.setAttribute("aria-current", "true");
      item.append(b);
      return item;
    }

    async function loadHistory(more, focusFirst) {
      ui.historyStatus.textContent = "Loading…";
      const cursor = more ? state.historyCursor : null;
      try {
        const data = await client.api(`/api/conversations?limit=30${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`);
        const items = (data.conversations || []).map(conversationItem);
        if (more) ui.historyList.append(...items);
        else ui.historyList.replaceChildren(...items);
        state.historyCursor = data.nextCursor;
        ui.historyMore.hidden = !data.nextCursor;
        ui.historyStatus.textContent = ui.historyList.children.length ? "" : "No conversations yet. Send a message to start one.";
        if (focusFirst) (ui.historyList.querySelector("button") || ui.newChat).focus();
      } catch (err) {
        ui.historyStatus.textContent = `Could not load your conversations: ${err.message}. Close and open the list to retry.`;
      }
    }

    // ---- wiring -------------------------------------------------------------------------
    function wire() {
      ui.composer.addEventListener("submit", (e) => {
        e.preventDefault();
        submitInput();
      });
      ui.input.addEventListener("keydown", onInputKey);
      ui.stop.addEventListener("click", stop);
      ui.newChat.addEventListener("click", newConversation);
      ui.historyToggle.addEventListener("click", toggleHistory);
      ui.historyMore.addEventListener("click", () => loadHistory(true));
      ui.historyPanel.addEventListener("keydown", (e) => {
        if (e.key === "Escape") closeHistory(true);
      });
      client.on("state", onConnection);
      client.on("connect", onReconnect);
      client.on("chat:delta", onDelta);
      client.on("chat:tool", onTool);
      client.on("chat:done", onDone);
      client.on("chat:error", onError);
      client.on("job:orphan", onOrphanJob);
    }

    function submitInput() {
      const text = ui.input.value;
      if (!text.trim() || isGenerating()) return;
      ui.input.value = "";
      ui.input.focus();
      send(text);
    }

    function onInputKey(e) {
      const enter = e.key === "Enter" && !e.shiftKey && !e.isComposing;
      const escape = e.key === "Escape" && isGenerating();
      if (enter || escape) e.preventDefault();
      if (enter) submitInput();
      if (escape) stop();
    }

    // Reopens the remembered conversation, if any.
    function start() {
      let remembered = null;
      try {
        remembered = storage?.getItem(storageKey) || null;
      } catch {
        remembered = null;
      }
      if (remembered) open(remembered);
      else showEmpty();
    }

    wire();
    onConnection({ state: client.state, problem: client.problem });
    start();
    return {
      send, stop, open, newConversation,
      get conversationId() { return state.conversationId; },
      get generating() { return isGenerating(); },
      focus: () => ui.input.focus(),
    };
  }

  ns.createChat = createChat;
})(window);
