"use strict";
// The chat pane: draws a chat session (chat_session.js) into the DOM, its replies
// streaming in, tool steps as cards, Stop, and the user's conversations, and wires
// the message box. Used by the page and the widget: Leadstream.createChat({root, client, ...}).

(function (global) {
  const ns = global.Leadstream;
  const { el, button, link, timeElement, count, plural } = ns.ui;
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

  const NOTES = {
    not_sent: "Not sent: ",
    stop_failed: "Could not stop: ",
    resume_failed: "Could not recover this reply: ",
    error: "",
  };
  const TOOL_LABELS = {
    search_leads: ["Searching leads…", "Search failed"],
    save_leads: ["Saving leads…", "Saving failed"],
    export_leads: ["Preparing the CSV export…", "Export failed"],
    lookup_profile: ["Looking up the profile…", "Lookup failed"],
  };

  function errorText(error) {
    const message = (error?.message || "Something went wrong").replace(/[.\s]+$/, "");
    return `${message}. ${ERROR_ADVICE[error?.code] || "You can try again."}`;
  }

  function describeSearch(args = {}) {
    const bits = [args.title, args.seniority, args.company && `at ${args.company}`, args.industry,
      args.location && `in ${args.location}`, args.keywords, args.hasPhone && "with phone",
      args.hasEmail && "with email", args.limit && `up to ${args.limit}`];
    return bits.filter(Boolean).join(" · ");
  }

  function sentence(summary) {
    return summary ? summary[0].toUpperCase() + summary.slice(1) : "Done";
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
    const session = ns.createChatSession({ client, storage, storageKey });
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
    const bubbles = new WeakMap(); // reply -> {root, cards, textNode, cardsByCall}
    let latestSearch = null; // the search card whose results "save them" refers to

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
        item.append(button(text, "lc-example", () => session.send(text)));
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

    function showMessage({ text, live }) {
      if (live) closeHistory(false);
      addMessage("user", "You said: ", el("p", "lc-text", text));
    }

    function showReply({ reply }) {
      const cards = el("ul", "lc-cards");
      cards.setAttribute("aria-label", "Steps");
      const textEl = el("div", "lc-text");
      const textNode = document.createTextNode("");
      textEl.append(textNode);
      const row = addMessage("assistant", "Assistant: ", cards, textEl);
      row.setAttribute("aria-busy", "true");
      bubbles.set(reply, { root: row, cards, textNode, cardsByCall: new Map() });
    }

    function showText({ reply, text }) {
      const bubble = bubbles.get(reply);
      keepScrolled(() => bubble.textNode.appendData(text));
    }

    function addNote(reply, className, text) {
      const bubble = bubbles.get(reply);
      keepScrolled(() => bubble.root.append(el("p", `lc-note ${className}`, text)));
    }

    function showNote({ reply, kind, error, text }) {
      addNote(reply, "lc-failed", `${NOTES[kind] ?? ""}${errorText(error)}`);
      if (kind === "not_sent" && !ui.input.value) ui.input.value = text; // give the text back for another try
    }

    function showFinished({ reply, outcome }) {
      bubbles.get(reply).root.removeAttribute("aria-busy");
      if (outcome === "stopped") addNote(reply, "lc-stopped", "Stopped. Ask again to continue.");
      if (outcome === "failed") addNote(reply, "lc-failed", "This reply failed. Try sending it again.");
    }

    function showTranscript(transcript) {
      if (transcript.state === "empty" || transcript.state === "loading") latestSearch = null;
      if (transcript.state === "empty") {
        showEmpty();
        if (!transcript.newChat) return;
        closeHistory(false);
        ui.input.focus();
      } else if (transcript.state === "loading") {
        closeHistory(false);
        ui.log.replaceChildren(el("p", "lc-loading lc-muted", "Loading the conversation…"));
      } else if (transcript.state === "failed") {
        const problem = el("p", "lc-loading lc-failed", `Could not load this conversation: ${transcript.error.message}. `);
        problem.append(button("Try again", "lc-chip", () => session.open(transcript.conversationId)));
        ui.log.replaceChildren(problem);
      } else if (transcript.state === "restoring") {
        ui.log.replaceChildren();
      } else if (transcript.state === "restored") {
        if (transcript.empty) showEmpty();
        ui.log.scrollTop = ui.log.scrollHeight;
      }
    }

    // ---- tool cards ---------------------------------------------------------------
    function cardFor(reply, tool) {
      const bubble = bubbles.get(reply);
      let card = bubble.cardsByCall.get(tool.callId);
      if (card) return card;
      const li = el("li", "lc-card");
      li.dataset.tool = tool.name;
      const title = el("p", "lc-card-title");
      const detail = el("p", "lc-card-detail");
      const progress = el("progress", "lc-progress");
      progress.setAttribute("aria-label", `${tool.name.replace("_", " ")} progress`);
      const actions = el("div", "lc-card-actions");
      li.append(title, detail, progress, actions);
      card = { li, title, detail, progress, actions };
      bubble.cardsByCall.set(tool.callId, card);
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

    function showTool({ reply, tool, event, live }) {
      const card = cardFor(reply, tool);
      const [running, failed] = TOOL_LABELS[tool.name] || [`Running ${tool.name}…`, `${tool.name} failed`];
      card.li.dataset.status = tool.status;
      card.actions.replaceChildren();
      if (tool.name === "search_leads") card.detail.textContent = describeSearch(tool.args);
      if (tool.status === "error") {
        card.title.textContent = `${failed}: ${tool.error?.message || "unknown error"}`;
        card.progress.hidden = true;
      } else if (tool.status === "done") {
        card.title.textContent = tool.name === "export_leads" ? "Export started" : sentence(tool.summary);
        card.progress.hidden = true;
        if (tool.name === "search_leads") markLatestSearch(card);
      } else {
        const p = tool.progress || {};
        card.title.textContent = tool.name === "search_leads" && p.done != null
          ? `Searching leads… ${count(p.done)} found${p.total ? ` of ${count(p.total)}` : ""}`
          : running;
        setProgress(card, p.done, p.total);
      }
      hooks.onTool?.(event, { live, conversationId: reply.conversationId });
    }

    function markLatestSearch(card) {
      if (latestSearch && latestSearch !== card) latestSearch.actions.replaceChildren();
      latestSearch = card;
      if (hooks.onShowResults) card.actions.append(button("Show results", "lc-chip", hooks.onShowResults));
      card.actions.append(
        button("Save all", "lc-chip", () => session.send("save them")),
        button("Save with phone", "lc-chip", () => session.send("save the ones with phones")),
      );
    }

    function showExport({ reply, tool, update }) {
      const card = cardFor(reply, tool);
      if (!update) {
        card.title.textContent = "Exporting…";
        return;
      }
      if (update.event === "export:unavailable") {
        card.title.textContent = "Export started (its status is no longer available)";
        return;
      }
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
      const a = link("Download CSV", ns.ui.httpUrl(update.url, session.base));
      if (a.nodeType !== 1) return;
      a.className = "lc-download";
      a.setAttribute("download", "");
      keepScrolled(() => card.actions.replaceChildren(a));
    }

    // ---- composer and connection ----------------------------------------------------
    function showGenerating(on) {
      const stopHadFocus = root.getRootNode().activeElement === ui.stop;
      ui.send.hidden = on;
      ui.stop.hidden = !on;
      ui.stop.disabled = false;
      ui.stop.textContent = "Stop";
      if (stopHadFocus && !on) ui.input.focus();
      updateComposer();
      hooks.onGenerating?.(on);
    }

    function showStopping(on) {
      ui.stop.disabled = on;
      ui.stop.textContent = on ? "Stopping…" : "Stop";
    }

    function updateComposer() {
      const online = session.connected;
      ui.send.disabled = !online;
      ui.hint.textContent = online
        ? "Enter sends, Shift+Enter adds a line, Escape stops a reply."
        : "Waiting for the connection; you can keep typing.";
    }

    function showConnection({ state: connection, problem }) {
      ui.conn.dataset.state = connection;
      ui.conn.textContent = CONNECTION_TEXT[connection] || connection;
      let text = problem;
      if (!text && connection === "reconnecting") text = "Connection lost. Reconnecting; a reply in progress will pick up where it stopped.";
      if (!text && connection === "offline") text = "Offline. Check that the server is running, then reload the page.";
      ui.problem.textContent = text;
      ui.problem.hidden = !text || connection === "connected";
      updateComposer();
    }

    // ---- conversations list -------------------------------------------------------------
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
      const b = button("", "lc-conversation", () => session.open(conversation.id));
      b.append(el("span", "lc-conversation-title", conversation.title || "Untitled"), timeElement(conversation.updatedAt));
      if (conversation.id === session.conversationId) b.setAttribute("aria-current", "true");
      item.append(b);
      return item;
    }

    async function loadHistory(more, focusFirst) {
      ui.historyStatus.textContent = "Loading…";
      try {
        const page = await session.conversations(more);
        const items = page.conversations.map(conversationItem);
        if (more) ui.historyList.append(...items);
        else ui.historyList.replaceChildren(...items);
        ui.historyMore.hidden = !page.more;
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
      ui.stop.addEventListener("click", session.stop);
      ui.newChat.addEventListener("click", session.newConversation);
      ui.historyToggle.addEventListener("click", toggleHistory);
      ui.historyMore.addEventListener("click", () => loadHistory(true));
      ui.historyPanel.addEventListener("keydown", (e) => {
        if (e.key === "Escape") closeHistory(true);
      });
      session.on("connection", showConnection);
      session.on("reconnected", () => {
        if (!ui.historyPanel.hidden) loadHistory(false);
      });
      session.on("conversation", (id) => hooks.onConversation?.(id));
      session.on("transcript", showTranscript);
      session.on("message", showMessage);
      session.on("reply", showReply);
      session.on("text", showText);
      session.on("tool", showTool);
      session.on("export", showExport);
      session.on("note", showNote);
      session.on("finished", showFinished);
      session.on("generating", showGenerating);
      session.on("stopping", showStopping);
    }

    function submitInput() {
      const text = ui.input.value;
      if (!text.trim() || session.generating) return;
      ui.input.value = "";
      ui.input.focus();
      session.send(text);
    }

    function onInputKey(e) {
      const enter = e.key === "Enter" && !e.shiftKey && !e.isComposing;
      const escape = e.key === "Escape" && session.generating;
      if (enter || escape) e.preventDefault();
      if (enter) submitInput();
      if (escape) session.stop();
    }

    wire();
    showConnection(session.connection);
    session.start();
    return {
      session,
      send: session.send, stop: session.stop, open: session.open, newConversation: session.newConversation,
      get conversationId() { return session.conversationId; },
      get generating() { return session.generating; },
      focus: () => ui.input.focus(),
    };
  }

  ns.createChat = createChat;
})(window);
