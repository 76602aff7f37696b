"use strict";
// The Leadstream page: wires the chat pane (chat.js) to the lead views (leads.js),
// the tabs, and the Chat / Leads switch of narrow screens. Wire contract: PROTOCOL.md.

(() => {
  const ns = window.Leadstream;
  const $ = (id) => document.getElementById(id);

  function setNotice(...parts) {
    const notice = $("notice");
    notice.replaceChildren(...parts);
    notice.hidden = parts.length === 0;
  }

  function code(text) {
    return ns.ui.el("code", "", text);
  }

  // ---- views (narrow screens show one pane at a time; usage replaces the leads) --
  let usageView = null; // made once the client exists

  function setView(view) {
    $("layout").dataset.view = view;
    for (const id of ["view-chat", "view-leads", "view-usage"]) {
      $(id).setAttribute("aria-pressed", String(id === `view-${view}`));
    }
    if (view === "usage") usageView?.show();
    else usageView?.hide();
  }

  // ---- tabs: Saved leads / Search results --------------------------------------
  const TABS = ["tab-saved", "tab-results"];

  function selectTab(id, focus) {
    for (const tabId of TABS) {
      const tab = $(tabId);
      const selected = tabId === id;
      tab.setAttribute("aria-selected", String(selected));
      tab.tabIndex = selected ? 0 : -1;
      $(tab.getAttribute("aria-controls")).hidden = !selected;
    }
    if (focus) $(id).focus();
  }

  function onTabKey(e) {
    const index = TABS.indexOf(e.target.id);
    const moves = { ArrowRight: index + 1, ArrowLeft: index - 1, Home: 0, End: TABS.length - 1 };
    if (!(e.key in moves)) return;
    e.preventDefault();
    selectTab(TABS[(moves[e.key] + TABS.length) % TABS.length], true);
  }

  function setTabCount(id, n) {
    $(id).textContent = n == null ? "" : ns.ui.count(n);
  }

  // ---- start-up ------------------------------------------------------------------
  async function loadInfo() {
    try {
      const info = await (await fetch("/api/info")).json();
      $("model").textContent = `Model: ${info.model || "unknown"}`;
    } catch {
      $("model").textContent = "Model: unknown";
    }
  }

  async function getToken() {
    const given = new URLSearchParams(location.search).get("token");
    try {
      return await ns.obtainToken(location.origin, given);
    } catch (err) {
      if (err.status === 404) {
        setNotice("This server needs a sign-in link. Create a token with ",
          code("leadstream token --org ORG --user USER"), ", then open ", code("/?token=TOKEN"), ".");
      } else {
        setNotice(`Could not reach the server (${err.message}). Check that `, code("leadstream serve"),
          " is running, then reload this page.");
      }
      return null;
    }
  }

  function wireUi(chat) {
    $("view-chat").addEventListener("click", () => setView("chat"));
    $("view-leads").addEventListener("click", () => setView("leads"));
    $("view-usage").addEventListener("click", () => setView($("layout").dataset.view === "usage" ? "leads" : "usage"));
    for (const id of TABS) {
      $(id).addEventListener("click", () => selectTab(id, false));
      $(id).addEventListener("keydown", onTabKey);
    }
    $("skip-chat").addEventListener("click", () => {
      setView("chat");
      setTimeout(() => chat.focus());
    });
    $("skip-leads").addEventListener("click", () => setView("leads"));
  }

  const LIVE_TEXT = {
    connecting: "Connecting…", connected: "Live updates on",
    reconnecting: "Reconnecting; updates resume when back", offline: "Offline: updates paused",
  };

  function showLiveState({ state }) {
    const live = $("live-state");
    live.dataset.state = state;
    live.firstElementChild.textContent = LIVE_TEXT[state] || state;
  }

  function showResults() {
    setView("leads");
    selectTab("tab-results", false);
  }

  async function start() {
    setView("chat");
    loadInfo();
    if (typeof io !== "function") {
      setNotice("The Socket.IO client did not load (/static/socket.io.min.js). Reload the page.");
      return;
    }
    const token = await getToken();
    if (!token) return;
    // Without a ?token= link the page runs on dev tokens, which it can renew itself.
    const given = new URLSearchParams(location.search).get("token");
    const renewToken = given ? null : () => ns.obtainToken(location.origin, null);
    const client = ns.createClient({ base: location.origin, token, io, renewToken });
    let results = null;
    const chat = ns.createChat({
      root: $("chat"), client, idPrefix: "chat", storage: sessionStorage, storageKey: "leadstream:conversation",
      hooks: {
        onTool: (ev, info) => {
          // A search this tab started brings its results tab forward.
          if (results?.onTool(ev, info)) selectTab("tab-results", false);
        },
        onConversation: () => results?.clear(),
        onGenerating: () => results?.show(),
        onShowResults: showResults,
      },
    });
    // One drawer for every view of a saved lead; a lead waiting for its delete shows dimmed.
    let saved = null;
    const drawer = ns.createLeadDrawer({
      client,
      onDeletesChanged: () => {
        saved?.redraw();
        results?.redraw();
      },
    });
    const rowState = (lead) => (lead.id && drawer.isDeleting(lead.id) ? "deleting" : "");
    results = ns.createResults({
      client, chat, rowState,
      onCount: (n) => setTabCount("results-count", n),
      savedLead: (id) => saved?.lead(id),
      onOpen: (lead, key) => drawer.open(lead, () => results.focusRow(key)),
    });
    saved = ns.createSavedLeads({
      client, rowState,
      onTotal: (n) => setTabCount("saved-count", n),
      onAskAssistant: () => {
        setView("chat");
        chat.focus();
      },
      // Every view of a saved lead follows the saved list's feed, in version order.
      onApplied: (changes) => {
        results.applyChanges(changes);
        drawer.applyChanges(changes);
      },
      onResync: () => drawer.resync(),
      onOpen: (lead, key) => drawer.open(lead, () => saved.focusRow(key)),
    });
    ns.createImporter({
      client, root: $("import-panel"), trigger: $("import"), input: $("import-file"), dropZone: $("panel-saved"),
      onShowImported: () => {
        selectTab("tab-saved", false);
        saved.showNewest();
      },
    });
    usageView = ns.createUsageView({ client, root: $("usage") });
    wireUi(chat);
    client.on("state", showLiveState);
    client.connect();
    saved.reload();
  }

  start();
})();
