"use strict";
// The usage view: what the org used per UTC day over the last 30 days (replies, prompt
// and completion tokens, model cost, RocketReach lookup credits), from GET /api/usage,
// as totals and a table, newest day first. It reloads when shown, on its Refresh
// button, and after each of this user's replies while it is shown.

(function (global) {
  const ns = global.Leadstream;
  const { el, button, count, debounce } = ns.ui;
  const RELOAD_AFTER_REPLY_MS = 500; // replies ending together cost one request

  const dayFormat = new Intl.DateTimeFormat(undefined, { weekday: "short", day: "numeric", month: "short", timeZone: "UTC" });
  const rangeFormat = new Intl.DateTimeFormat(undefined, { day: "numeric", month: "short", year: "numeric", timeZone: "UTC" });
  const usd = new Intl.NumberFormat(undefined, { style: "currency", currency: "USD", minimumFractionDigits: 2, maximumFractionDigits: 4 });

  const utcDate = (day) => new Date(`${day}T00:00:00Z`);
  const money = (value) => (value > 0 && value < 0.0001 ? `< ${usd.format(0.0001)}` : usd.format(value || 0));

  const COLUMNS = [
    { key: "replies", label: "Replies", format: count },
    { key: "promptTokens", label: "Prompt tokens", format: count },
    { key: "completionTokens", label: "Completion tokens", format: count },
    { key: "costUsd", label: "Cost", format: money },
    { key: "credits", label: "Lookup credits", format: count },
  ];

  const used = (day) => COLUMNS.some(({ key }) => day[key] > 0);

  function card(label, value, note) {
    const item = el("li", "stat");
    item.append(el("span", "stat-label", label), el("strong", "stat-value", value), el("span", "stat-note", note));
    return item;
  }

  function summary(totals, days) {
    const active = days.filter(used).length;
    const list = el("ul", "stats usage-stats");
    list.setAttribute("aria-label", "Usage totals");
    list.dataset.testid = "usage-totals";
    list.append(
      card("Replies", count(totals.replies), `${count(active)} of ${count(days.length)} days with use`),
      card("Tokens", count(totals.promptTokens + totals.completionTokens),
        `${count(totals.promptTokens)} prompt · ${count(totals.completionTokens)} completion`),
      card("Model cost", money(totals.costUsd), "from the price table"),
      card("Lookup credits", count(totals.credits), "RocketReach contacts revealed"),
    );
    return list;
  }

  function row(cells, className) {
    const tr = el("tr", className);
    cells.forEach((cell, i) => tr.append(el(i === 0 ? "th" : "td", "", cell)));
    tr.firstElementChild.scope = "row";
    return tr;
  }

  function table(days, totals) {
    const wrap = el("div", "usage-table-wrap");
    const t = el("table", "usage-table");
    t.dataset.testid = "usage-table";
    t.append(el("caption", "visually-hidden", "Usage per day, newest first (UTC)"));
    const head = el("thead");
    const headRow = el("tr");
    for (const label of ["Day", ...COLUMNS.map((c) => c.label)]) {
      const th = el("th", "", label);
      th.scope = "col";
      headRow.append(th);
    }
    head.append(headRow);
    const body = el("tbody");
    for (const day of [...days].reverse()) {
      const tr = row([dayFormat.format(utcDate(day.date)), ...COLUMNS.map(({ key, format }) => format(day[key]))],
        used(day) ? "" : "usage-idle");
      tr.dataset.date = day.date;
      body.append(tr);
    }
    const foot = el("tfoot");
    foot.append(row(["Total", ...COLUMNS.map(({ key, format }) => format(totals[key]))], "usage-total"));
    t.append(head, body, foot);
    wrap.append(t);
    return wrap;
  }

  function createUsageView({ client, root }) {
    let shown = false;
    let loading = null; // the AbortController of the request in flight

    const title = el("h2", "usage-title", "Usage");
    const range = el("p", "usage-range");
    const status = el("p", "usage-status");
    status.setAttribute("role", "status");
    status.dataset.testid = "usage-status";
    const refresh = button("Refresh", "secondary", () => load());
    const head = el("div", "usage-head");
    const heading = el("div");
    heading.append(title, range);
    head.append(heading, refresh);
    const content = el("div", "usage-content");
    root.replaceChildren(head, status, content);

    function render(data) {
      const { days, totals } = data;
      range.textContent = `${rangeFormat.format(utcDate(data.from))} – ${rangeFormat.format(utcDate(data.to))} (UTC days), your organisation`;
      content.replaceChildren(summary(totals, days), table(days, totals));
      status.textContent = totals.replies || totals.credits ? "" : "Nothing used in the last 30 days yet.";
    }

    async function load() {
      loading?.abort();
      const abort = new AbortController();
      loading = abort;
      status.textContent = content.childElementCount ? "Updating…" : "Loading usage…";
      root.setAttribute("aria-busy", "true");
      try {
        render(await client.api("/api/usage", { signal: abort.signal }));
      } catch (err) {
        if (abort.signal.aborted) return;
        status.textContent = `Could not load the usage (${err.message}).`;
      } finally {
        if (loading === abort) {
          loading = null;
          root.removeAttribute("aria-busy");
        }
      }
    }

    // A reply of this user just ended: its tokens are counted, show them.
    const reloadSoon = debounce(load, RELOAD_AFTER_REPLY_MS);
    client.on("chat:done", () => shown && reloadSoon());

    return {
      show() {
        shown = true;
        load();
      },
      hide() {
        shown = false;
      },
    };
  }

  ns.createUsageView = createUsageView;
})(window);
