"use strict";
// A virtualized lead table: fixed-height rows absolutely placed in a tall body,
// only the rows in view (plus a margin) exist in the DOM, so 20,000 rows scroll
// like 50. Under 640 px wide, CSS draws each row as a card (taller rows; the row
// height comes from the --vt-row-h custom property). No library.

(function (global) {
  const ns = global.Leadstream;
  const { el, button, externalLink, telHref, mailtoHref, httpUrl, timeElement } = ns.ui;
  const OVERSCAN = 6; // rows drawn beyond each edge of the view
  const NEAR_END = 40; // rows from the end at which the owner is asked for more
  const FLASH_MS = 1600;
  const SORT_OF_COLUMN = { name: "name:asc", company: "company:asc" };

  const COLUMNS = [
    { key: "name", label: "Name" },
    { key: "company", label: "Company" },
    { key: "phone", label: "Phone" },
    { key: "email", label: "Email" },
    { key: "linkedin", label: "LinkedIn" },
    { key: "added", label: "Added" },
  ];

  // ---- cells ------------------------------------------------------------------
  function twoLines(primary, secondary, className, openable) {
    const cell = el("div", `vt-cell ${className}`);
    cell.setAttribute("role", "cell");
    // An openable row's name is the button that opens its drawer (keyboard and screen readers).
    const first = openable ? button(primary || "—", "vt-primary vt-open") : el("span", "vt-primary", primary || "—");
    if (openable) first.setAttribute("aria-haspopup", "dialog");
    first.title = primary || "";
    cell.append(first);
    if (secondary) cell.append(Object.assign(el("span", "vt-secondary", secondary), { title: secondary }));
    return cell;
  }

  // The first phone or email as a tap target; "+N" says how many more there are.
  function contactCell(values, hrefOf, kind, name) {
    const cell = el("div", `vt-cell vt-${kind}`);
    cell.setAttribute("role", "cell");
    const first = values?.[0];
    if (!first) {
      cell.append(el("span", "vt-none", kind === "phone" ? "No phone" : "No email"));
      return cell;
    }
    const verb = kind === "phone" ? "Call" : "Email";
    const href = hrefOf(first);
    const target = el(href ? "a" : "span", "vt-tap");
    if (href) {
      target.href = href;
      target.setAttribute("aria-label", `${verb} ${name} at ${first}`);
      const label = el("span", "vt-tap-label", verb);
      label.setAttribute("aria-hidden", "true");
      target.append(label);
    }
    target.append(Object.assign(el("span", "vt-tap-value", first), { title: first }));
    cell.append(target);
    if (values.length > 1) {
      const more = el("span", "vt-more", `+${values.length - 1}`);
      more.title = values.slice(1).join(", ");
      cell.append(more);
    }
    return cell;
  }

  function linkedinCell(lead) {
    const cell = el("div", "vt-cell vt-linkedin");
    cell.setAttribute("role", "cell");
    const href = httpUrl(lead.linkedin);
    if (!href) {
      cell.append(el("span", "vt-none", "No profile"));
      return cell;
    }
    const a = externalLink("Profile", href, `LinkedIn profile of ${lead.name} (opens in a new tab)`);
    const arrow = el("span", "vt-external", " ↗");
    arrow.setAttribute("aria-hidden", "true");
    a.append(arrow);
    cell.append(a);
    return cell;
  }

  function addedCell(lead) {
    const cell = el("div", "vt-cell vt-added");
    cell.setAttribute("role", "cell");
    if (lead.createdAt) cell.append(timeElement(lead.createdAt));
    else cell.append(el("span", "vt-none", "Not saved"));
    return cell;
  }

  function leadCells(lead, openable) {
    return [
      twoLines(lead.name, lead.location, "vt-name", openable),
      twoLines(lead.company, lead.title, "vt-company"),
      contactCell(lead.phones, telHref, "phone", lead.name),
      contactCell(lead.emails, mailtoHref, "email", lead.name),
      linkedinCell(lead),
      addedCell(lead),
    ];
  }

  // ---- the table --------------------------------------------------------------
  /**
   * @param {object} o
   * @param {HTMLElement} o.root  where the table goes (emptied)
   * @param {string} o.label  accessible name of the table
   * @param {(lead) => string} [o.keyOf]  row identity [lead.id]
   * @param {(sort: string) => void} [o.onSort]  makes Name/Company/Added headers sort buttons
   * @param {() => void} [o.onNearEnd]  called when the view nears the last loaded row
   * @param {(lead, key: string) => void} [o.onOpen]  a click on a saved row (one with an id) opens it
   * @param {(lead) => string} [o.rowState]  a row's data-state ("" for none), e.g. "deleting"
   */
  function createLeadTable({ root, label, keyOf = (lead) => lead.id, onSort, onNearEnd, onOpen, rowState, testId }) {
    const scroller = el("div", "vt");
    scroller.setAttribute("role", "table");
    scroller.setAttribute("aria-label", label);
    scroller.tabIndex = 0;
    if (testId) scroller.dataset.testid = testId;
    const head = el("div", "vt-head");
    head.setAttribute("role", "rowgroup");
    const headRow = el("div", "vt-row vt-header");
    headRow.setAttribute("role", "row");
    headRow.setAttribute("aria-rowindex", "1");
    const headers = new Map(COLUMNS.map((c) => [c.key, headerCell(c)]));
    headRow.append(...headers.values());
    head.append(headRow);
    const body = el("div", "vt-body");
    body.setAttribute("role", "rowgroup");
    scroller.append(head, body);
    const overlay = el("div", "vt-overlay");
    overlay.hidden = true;
    root.replaceChildren(scroller, overlay);

    let rows = [];
    let rowHeight = 56;
    let frame = 0;
    let firstVisible = 0;
    const mounted = new Map(); // key -> row element
    const spare = []; // row elements out of the DOM, ready for reuse
    const flashes = new Map(); // key -> time the highlight ends

    function headerCell(column) {
      const cell = el("div", `vt-cell vt-h-${column.key}`);
      cell.setAttribute("role", "columnheader");
      const sortable = onSort && (SORT_OF_COLUMN[column.key] || column.key === "added");
      if (!sortable) {
        cell.textContent = column.label;
        return cell;
      }
      cell.append(button(column.label, "vt-sort", () => onSort(nextSort(column.key))));
      return cell;
    }

    let currentSort = "createdAt:desc";
    function nextSort(key) {
      if (key !== "added") return SORT_OF_COLUMN[key];
      return currentSort === "createdAt:desc" ? "createdAt:asc" : "createdAt:desc";
    }

    function setSort(sort) {
      currentSort = sort;
      const sorted = { "createdAt:desc": ["added", "descending"], "createdAt:asc": ["added", "ascending"],
        "name:asc": ["name", "ascending"], "company:asc": ["company", "ascending"] }[sort] || [];
      for (const [key, cell] of headers) {
        if (cell.querySelector("button")) cell.setAttribute("aria-sort", key === sorted[0] ? sorted[1] : "none");
      }
    }

    function measure() {
      const value = parseFloat(getComputedStyle(scroller).getPropertyValue("--vt-row-h"));
      if (value > 0 && value !== rowHeight) {
        rowHeight = value;
        for (const row of mounted.values()) row.style.height = `${rowHeight}px`;
      }
      body.style.height = `${rows.length * rowHeight}px`;
    }

    function makeRow() {
      const row = el("div", "vt-row");
      row.setAttribute("role", "row");
      return row;
    }

    function fill(row, lead, key) {
      row.lead = lead;
      row.dataset.key = key;
      row.replaceChildren(...leadCells(lead, Boolean(onOpen && lead.id)));
    }

    function place(row, index) {
      row.style.transform = `translateY(${index * rowHeight}px)`;
      row.style.height = `${rowHeight}px`;
      row.setAttribute("aria-rowindex", String(index + 2));
    }

    function render() {
      frame = 0;
      const top = scroller.scrollTop - body.offsetTop;
      const view = scroller.clientHeight;
      firstVisible = Math.max(0, Math.floor(top / rowHeight));
      const first = Math.max(0, firstVisible - OVERSCAN);
      const last = Math.min(rows.length, Math.ceil((top + view) / rowHeight) + OVERSCAN);
      const wanted = new Set();
      for (let i = first; i < last; i += 1) wanted.add(keyOf(rows[i]));
      for (const [key, row] of mounted) {
        if (wanted.has(key)) continue;
        mounted.delete(key);
        row.remove();
        spare.push(row);
      }
      let previous = null;
      for (let i = first; i < last; i += 1) previous = mountRow(rows[i], i, previous);
      if (onNearEnd && last >= rows.length - NEAR_END) onNearEnd();
    }

    // Rows that stay keep their DOM place (and keyboard focus); new ones go in order.
    function mountRow(lead, index, previous) {
      const key = keyOf(lead);
      let row = mounted.get(key);
      if (!row) {
        row = spare.pop() || makeRow();
        mounted.set(key, row);
      }
      if (row.lead !== lead) fill(row, lead, key);
      const state = rowState?.(lead) || "";
      if ((row.dataset.state || "") !== state) row.dataset.state = state;
      row.classList.toggle("vt-flash", (flashes.get(key) || 0) > Date.now());
      place(row, index);
      if (!row.isConnected || row.previousElementSibling !== previous) {
        if (previous) previous.after(row);
        else body.prepend(row);
      }
      return row;
    }

    function schedule() {
      if (!frame) frame = requestAnimationFrame(render);
    }

    // Replaces the rows (the array is the owner's; call refresh() after changing it).
    function setRows(list) {
      rows = list;
      refresh();
    }

    function refresh() {
      measure();
      schedule();
    }

    // Keeps the rows in view still when a row is added or removed above them.
    function shiftedAbove(index, delta) {
      if (index < firstVisible && scroller.scrollTop > 0) scroller.scrollTop += delta * rowHeight;
    }

    function flash(key) {
      flashes.set(key, Date.now() + FLASH_MS);
      const row = mounted.get(key);
      if (row) {
        row.classList.remove("vt-flash");
        void row.offsetWidth; // restart the animation
        row.classList.add("vt-flash");
      }
      setTimeout(() => {
        if ((flashes.get(key) || 0) <= Date.now()) {
          flashes.delete(key);
          mounted.get(key)?.classList.remove("vt-flash");
        }
      }, FLASH_MS + 50);
    }

    // A message in place of the rows (empty, loading, error); null shows the rows.
    function setOverlay(node) {
      overlay.replaceChildren(...(node ? [node] : []));
      overlay.hidden = !node;
      scroller.classList.toggle("vt-covered", Boolean(node));
    }

    function setRowCount(total) {
      scroller.setAttribute("aria-rowcount", total == null ? "-1" : String(total + 1));
    }

    function scrollToTop() {
      scroller.scrollTop = 0;
    }

    // Focus back on a row's open button (after its drawer closed), else on the table.
    function focusRow(key) {
      const target = mounted.get(key)?.querySelector(".vt-open");
      (target?.isConnected ? target : scroller).focus();
    }

    // A click anywhere on a saved row opens it, except on its links.
    function onBodyClick(e) {
      const row = e.target.closest(".vt-row");
      if (!row?.lead?.id || e.target.closest("a")) return;
      onOpen(row.lead, row.dataset.key);
    }

    scroller.addEventListener("scroll", schedule, { passive: true });
    if (onOpen) body.addEventListener("click", onBodyClick);
    new ResizeObserver(refresh).observe(scroller);
    setSort(currentSort);
    return { setRows, refresh, flash, setOverlay, setRowCount, setSort, shiftedAbove, scrollToTop, focusRow, element: scroller };
  }

  ns.createLeadTable = createLeadTable;
})(window);
