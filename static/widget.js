"use strict";
// The embeddable Leadstream chat. On any site:
//   <script src="https://HOST/static/widget.js" data-token="TOKEN" async></script>
// draws a floating chat bubble in a Shadow DOM (the host page's styles do not reach
// in, ours do not leak out) and, when opened, loads the Socket.IO client and the
// chat pane from HOST, the origin of this script. Optional: data-title.
// Globals it adds: window.Leadstream (the chat code); a host page's own `io` is kept.

(() => {
  const script = document.currentScript || document.querySelector('script[src*="/static/widget.js"]');
  if (!script || window.Leadstream?.widget) return; // one widget per page
  const base = new URL(script.src, location.href).origin;
  const token = script.dataset.token || "";
  const title = script.dataset.title || "Leadstream";
  const OPEN_KEY = `leadstream-widget:${base}:open`;
  const CONVERSATION_KEY = `leadstream-widget:${base}:conversation`;
  // Full paths: the server adds each file's content version to them (?v=hash), so
  // browsers keep these files for a year while this script itself is revalidated.
  const CODE = ["/static/socket.io.min.js", "/static/ui.js", "/static/client.js",
    "/static/chat_session.js", "/static/chat.js"];

  // The bubble and panel; the chat pane's own styles come from chat.css.
  const STYLE = `
:host { all: initial !important; }
.lw { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1b1f24; }
.lw *, .lw *::before, .lw *::after { box-sizing: border-box; }
.lw [hidden] { display: none !important; }
.lw-bubble {
  position: fixed; right: 20px; bottom: 20px; z-index: 2147483000;
  width: 56px; height: 56px; display: grid; place-items: center; padding: 0;
  color: #fff; background: #1f5fbf; border: 0; border-radius: 50%; cursor: pointer;
  box-shadow: 0 6px 20px rgb(0 0 0 / 25%);
}
.lw-bubble:hover { background: #174a96; }
.lw-bubble:focus-visible { outline: 3px solid #0b57d0; outline-offset: 3px; }
.lw-bubble svg { width: 26px; height: 26px; fill: currentColor; }
.lw-panel {
  position: fixed; right: 20px; bottom: 88px; z-index: 2147483000;
  width: 380px; height: min(600px, calc(100vh - 110px));
  display: flex; flex-direction: column; overflow: hidden;
  background: #fff; border: 1px solid #d0d7de; border-radius: 14px;
  box-shadow: 0 12px 40px rgb(0 0 0 / 22%);
}
.lw-body { flex: 1; min-height: 0; display: flex; flex-direction: column; }
.lw-status { margin: auto; padding: 1.5rem; text-align: center; color: #57606a; }
@media (max-width: 639px) {
  .lw-panel { inset: 0; width: auto; height: auto; border: 0; border-radius: 0; }
  .lw-open .lw-bubble { display: none; }
}`;
  const ICON = '<svg viewBox="0 0 24 24" aria-hidden="true"><path d="M4 4h16a2 2 0 0 1 2 2v10a2 2 0 0 1-2 2H9l-5 4v-4H4a2 2 0 0 1-2-2V6a2 2 0 0 1 2-2zm3 6a1.5 1.5 0 1 0 0 3 1.5 1.5 0 0 0 0-3zm5 0a1.5 1.5 0 1 0 0 3 1.5 1.5 0 0 0 0-3zm5 0a1.5 1.5 0 1 0 0 3 1.5 1.5 0 0 0 0-3z"/></svg>';

  // ---- loading the chat code from HOST ------------------------------------------
  function loadScript(url) {
    return new Promise((resolve, reject) => {
      const tag = document.createElement("script");
      tag.src = url;
      tag.async = false; // keep execution order
      tag.onload = resolve;
      tag.onerror = () => reject(new Error(`could not load ${url}`));
      document.head.append(tag);
    });
  }

  // The UMD bundle sets window.io, or registers with a host's AMD loader instead:
  // hide the loader while it runs, take our `io`, and give the host back its own.
  async function loadCode() {
    const hostIo = Object.getOwnPropertyDescriptor(window, "io");
    const amd = typeof window.define === "function" ? window.define.amd : undefined;
    if (amd) window.define.amd = undefined;
    try {
      await Promise.all(CODE.map((path) => loadScript(`${base}${path}`)));
    } finally {
      if (amd) window.define.amd = amd;
    }
    const io = window.io;
    if (hostIo) Object.defineProperty(window, "io", hostIo);
    else delete window.io;
    return io;
  }

  // ---- the bubble and the panel -----------------------------------------------------
  function build() {
    const host = document.createElement("leadstream-widget");
    const shadow = host.attachShadow({ mode: "open" });
    const style = document.createElement("style");
    style.textContent = STYLE;
    const sheet = document.createElement("link");
    sheet.rel = "stylesheet";
    sheet.href = `${base}/static/chat.css`;
    const root = document.createElement("div");
    root.className = "lw";
    root.innerHTML = `
<button type="button" class="lw-bubble" aria-expanded="false" aria-controls="lw-panel">${ICON}</button>
<div class="lw-panel" id="lw-panel" role="dialog" hidden><div class="lw-body"><p class="lw-status" role="status">Loading the chat…</p></div></div>`;
    shadow.append(style, sheet, root);
    const ui = { host, shadow, root, bubble: root.querySelector(".lw-bubble"),
      panel: root.querySelector(".lw-panel"), body: root.querySelector(".lw-body") };
    ui.bubble.setAttribute("aria-label", `Open the ${title} chat`);
    ui.panel.setAttribute("aria-label", `${title} chat`);
    return ui;
  }

  function createWidget() {
    const ui = build();
    let chat = null;
    let starting = null;

    function setOpen(open, focus = true) {
      ui.panel.hidden = !open;
      ui.root.classList.toggle("lw-open", open);
      ui.bubble.setAttribute("aria-expanded", String(open));
      ui.bubble.setAttribute("aria-label", `${open ? "Close" : "Open"} the ${title} chat`);
      remember(OPEN_KEY, open ? "1" : "");
      if (!open) return focus && ui.bubble.focus();
      if (chat) return focus && chat.focus();
      startChat(focus);
    }

    function remember(key, value) {
      try {
        if (value) sessionStorage.setItem(key, value);
        else sessionStorage.removeItem(key);
      } catch {
        // storage can be off; the widget then simply starts closed
      }
    }

    function sessionStorageOrNull() {
      try {
        return window.sessionStorage;
      } catch {
        return null;
      }
    }

    function showStatus(text) {
      const p = document.createElement("p");
      p.className = "lw-status";
      p.setAttribute("role", "status");
      p.textContent = text;
      ui.body.replaceChildren(p);
    }

    async function startChat(focus) {
      if (starting) return starting;
      starting = (async () => {
        let io;
        try {
          io = await loadCode();
        } catch (err) {
          starting = null;
          return showStatus(`The chat could not load (${err.message}). Check your connection and open it again.`);
        }
        const ns = window.Leadstream;
        let bearer;
        try {
          bearer = await ns.obtainToken(base, token);
        } catch {
          starting = null;
          return showStatus("This chat is not set up: the page must give a token in the script tag's data-token attribute.");
        }
        const renewToken = token ? null : () => ns.obtainToken(base, "");
        const client = ns.createClient({ base, token: bearer, io, renewToken });
        const close = ns.ui.button("Close", "lc-ghost", () => setOpen(false));
        const pane = document.createElement("div");
        ui.body.replaceChildren(pane);
        chat = ns.createChat({ root: pane, client, idPrefix: "lw", storage: sessionStorageOrNull(),
          storageKey: CONVERSATION_KEY, extraActions: [close] });
        pane.querySelector(".lc-title").textContent = title;
        client.connect();
        if (focus) chat.focus();
      })();
      return starting;
    }

    ui.bubble.addEventListener("click", () => setOpen(ui.panel.hidden));
    ui.panel.addEventListener("keydown", (e) => {
      if (e.key === "Escape" && !e.defaultPrevented && !e.target.closest?.(".lc-history")) setOpen(false);
    });
    document.body.append(ui.host);
    let wasOpen = false;
    try {
      wasOpen = sessionStorage.getItem(OPEN_KEY) === "1";
    } catch {
      wasOpen = false;
    }
    if (wasOpen) setOpen(true, false); // reopened after the host page navigated: no focus theft
    return { open: () => setOpen(true), close: () => setOpen(false), host: ui.host };
  }

  function start() {
    const ns = window.Leadstream || (window.Leadstream = {});
    ns.widget = createWidget();
  }

  if (document.body) start();
  else document.addEventListener("DOMContentLoaded", start);
})();
