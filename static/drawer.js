"use strict";
// The lead drawer: every field of one saved lead in a side panel (a modal <dialog>),
// edited in place with PATCH /api/leads/{id} (only the fields that changed), deleted
// with a few seconds to undo. The saved leads' feed keeps it current: when someone
// else changes or deletes the open lead, the drawer says so and shows the current record.

(function (global) {
  const ns = global.Leadstream;
  const { el, button, timeElement } = ns.ui;
  const UNDO_MS = 5000;
  const TOAST_MS = 4000;

  // Editable fields: [key, label, kind]; the kind says how a value is shown and read.
  const FIELDS = [
    ["name", "Name", "text"], ["title", "Title", "text"], ["company", "Company", "text"],
    ["location", "Location", "text"], ["industry", "Industry", "text"],
    ["emails", "Emails, one per line", "lines"], ["phones", "Phones, one per line", "lines"],
    ["linkedin", "LinkedIn URL", "text"], ["tags", "Tags, separated by commas", "tags"],
    ["notes", "Notes", "notes"],
  ];
  const MULTILINE = new Set(["lines", "notes"]);

  // The record as the form holds it, so a lead and the form compare field by field.
  function fromLead(lead, key, kind) {
    const value = lead[key];
    if (kind === "lines") return (value || []).join("\n");
    if (kind === "tags") return (value || []).join(", ");
    return value || "";
  }

  function toWire(text, kind) {
    if (kind === "lines") return text.split("\n").map((s) => s.trim()).filter(Boolean);
    if (kind === "tags") return text.split(",").map((s) => s.trim()).filter(Boolean);
    return text.trim();
  }

  // Two wire records are the same when their JSON is (both come from the server's Lead.to_wire).
  const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);
  const quoted = (lead) => `“${lead.name || "this lead"}”`;
  const leadPath = (id) => `/api/leads/${encodeURIComponent(id)}`;

  const MARKUP = `
    <form class="drawer-form" method="dialog" novalidate>
      <header class="drawer-head">
        <h2 class="drawer-title" id="drawer-title" data-part="title">Lead</h2>
        <button type="button" class="drawer-x secondary" data-part="x" aria-label="Close">×</button>
      </header>
      <div class="drawer-notice" data-part="notice" role="alert" hidden></div>
      <p class="drawer-error" data-part="error" role="alert" hidden></p>
      <div class="drawer-fields" data-part="fields"></div>
      <dl class="drawer-meta" data-part="meta"></dl>
      <p class="drawer-status" data-part="status" role="status"></p>
      <footer class="drawer-actions">
        <button type="submit" data-part="save" data-testid="drawer-save">Save changes</button>
        <button type="button" class="secondary" data-part="close">Close</button>
        <button type="button" class="danger" data-part="delete" data-testid="drawer-delete">Delete</button>
      </footer>
    </form>`;

  // ---- deletes that wait a few seconds for an undo --------------------------------------
  // The page holds the DELETE back for UNDO_MS (rather than deleting and re-creating on
  // undo, which would give the lead a new id and tell every teammate twice); a tab
  // closed meanwhile sends it at once with fetch keepalive, as the user asked.
  function createDeletes({ client, toasts, onChange, onFocusBack }) {
    const pending = new Map(); // lead id -> {lead, timer, toast}

    function schedule(lead) {
      const toast = showToast(`Deleting ${quoted(lead)}…`);
      const undo = button("Undo", "secondary", () => keep(lead.id));
      undo.dataset.testid = "undo-delete";
      toast.append(undo);
      pending.set(lead.id, { lead, toast, timer: setTimeout(() => send(lead.id), UNDO_MS) });
      onChange();
      undo.focus();
    }

    function keep(id) {
      const entry = pending.get(id);
      if (!entry) return;
      clearTimeout(entry.timer);
      pending.delete(id);
      onChange();
      endToast(entry.toast, `Kept ${quoted(entry.lead)}.`);
    }

    async function send(id) {
      const entry = pending.get(id);
      entry.toast.replaceChildren(`Deleting ${quoted(entry.lead)}…`);
      let text = `Deleted ${quoted(entry.lead)}.`;
      try {
        await client.api(leadPath(id), { method: "DELETE" });
      } catch (err) {
        // 404: someone else deleted it first, which is what the user wanted too.
        if (err.status !== 404) text = `Could not delete ${quoted(entry.lead)}: ${err.message}.`;
      }
      pending.delete(id);
      onChange();
      endToast(entry.toast, text);
    }

    // The tab is going away: the deletes the user did not undo are sent now.
    function flush() {
      for (const [id, entry] of pending) {
        clearTimeout(entry.timer);
        // Nobody is left to tell of a failure; the lead stays, as after a failed delete.
        client.api(leadPath(id), { method: "DELETE", keepalive: true }).catch(() => {});
        entry.toast.replaceChildren(`Deleted ${quoted(entry.lead)}.`); // as a restored page shows it
      }
      pending.clear();
    }

    function showToast(text) {
      const toast = el("p", "toast", text);
      toasts.append(toast);
      return toast;
    }

    function endToast(toast, text) {
      const hadFocus = toast.contains(document.activeElement);
      toast.replaceChildren(text);
      if (hadFocus) onFocusBack(); // the Undo button is gone
      setTimeout(() => toast.remove(), TOAST_MS);
    }

    global.addEventListener("pagehide", flush);
    return { schedule, has: (id) => pending.has(id) };
  }

  // ---- the drawer ------------------------------------------------------------------------
  /**
   * @param {object} o
   * @param {object} o.client  from Leadstream.createClient
   * @param {() => void} o.onDeletesChanged  rows of leads waiting to be deleted changed
   */
  function createLeadDrawer({ client, onDeletesChanged }) {
    const dialog = el("dialog", "drawer");
    dialog.setAttribute("aria-labelledby", "drawer-title");
    dialog.dataset.testid = "drawer";
    dialog.innerHTML = MARKUP; // static markup; lead data only ever goes in through .value/textContent
    const toasts = el("div", "toasts");
    toasts.setAttribute("role", "status");
    document.body.append(dialog, toasts);
    const part = (name) => dialog.querySelector(`[data-part="${name}"]`);
    const ui = { form: dialog.querySelector("form"), title: part("title"), notice: part("notice"), error: part("error"),
      fields: part("fields"), meta: part("meta"), status: part("status"), save: part("save"), del: part("delete") };
    const inputs = new Map(); // key -> {input, error, row, kind}
    for (const [key, label, kind] of FIELDS) inputs.set(key, fieldRow(key, label, kind));

    // lead: the current record as this tab knows it (the form's starting point).
    // write: this tab's PATCH {before, answer, buffer} until its own change came by.
    // loading: changes that came while the record was being fetched.
    const state = { lead: null, returnFocus: null, write: null, loading: null, gone: false };
    let focusBack = null; // where focus goes after the toast of a delete ends
    const deletes = createDeletes({
      client, toasts, onChange: onDeletesChanged, onFocusBack: () => focusBack?.(),
    });

    function fieldRow(key, label, kind) {
      const row = el("div", "drawer-field");
      const id = `drawer-f-${key}`;
      const labelEl = el("label", "", label);
      labelEl.htmlFor = id;
      const input = el(MULTILINE.has(kind) ? "textarea" : "input");
      input.id = id;
      input.name = key;
      if (kind === "lines") input.rows = 2;
      if (kind === "notes") input.rows = 4;
      if (key === "linkedin") input.type = "url";
      if (key === "name") input.autocomplete = "off";
      const error = el("p", "drawer-field-error");
      error.id = `drawer-e-${key}`;
      error.hidden = true;
      row.append(labelEl, input, error);
      ui.fields.append(row);
      return { input, error, row, kind };
    }

    // ---- showing a record ---------------------------------------------------------------
    function fill(lead) {
      state.lead = lead;
      ui.title.textContent = lead.name || "Lead";
      for (const [key, { input, row, kind }] of inputs) {
        input.value = fromLead(lead, key, kind);
        // Notes only where the server's leads have them (older servers answer 422 to unknown fields).
        if (key === "notes") row.hidden = !("notes" in lead);
      }
      const meta = [["Source", [lead.source, lead.personId].filter(Boolean).join(" · ")]];
      if (Array.isArray(lead.sources) && lead.sources.length) {
        meta.push(["Sources", lead.sources.map((s) => (typeof s === "string" ? s : s.source)).join(", ")]);
      }
      meta.push(["Added", lead.createdAt && timeElement(lead.createdAt)], ["Updated", lead.updatedAt && timeElement(lead.updatedAt)]);
      ui.meta.replaceChildren(...meta.filter(([, value]) => value).flatMap(([term, value]) => [el("dt", "", term), wrap(value)]));
    }

    function wrap(value) {
      const dd = el("dd");
      dd.append(value);
      return dd;
    }

    function formValues() {
      const values = {};
      for (const [key, { input, row, kind }] of inputs) if (!row.hidden) values[key] = toWire(input.value, kind);
      return values;
    }

    // The fields the user changed from the record shown, as PATCH takes them.
    function changedFields() {
      const changed = {};
      for (const [key, value] of Object.entries(formValues())) {
        const { kind } = inputs.get(key);
        if (!same(value, toWire(fromLead(state.lead, key, kind), kind))) changed[key] = key === "linkedin" && !value ? null : value;
      }
      return changed;
    }

    function setEnabled(on) {
      for (const { input } of inputs.values()) input.disabled = !on;
      ui.save.disabled = !on;
      ui.del.disabled = !on;
    }

    function clearErrors() {
      ui.error.hidden = true;
      for (const { input, error } of inputs.values()) {
        error.hidden = true;
        input.removeAttribute("aria-invalid");
        input.removeAttribute("aria-describedby");
      }
    }

    // The server's 422 names each field ("emails.1"); each message goes under its field.
    function showErrors(err) {
      ui.error.hidden = false;
      ui.error.textContent = `Not saved: ${err.message}`;
      let first = null;
      for (const { field = "", message = "" } of err.details?.fields || []) {
        const entry = inputs.get(field.split(".")[0]);
        if (!entry) continue;
        const item = /^\d+$/.test(field.split(".")[1] || "") ? `Item ${Number(field.split(".")[1]) + 1}: ` : "";
        entry.error.textContent = (entry.error.hidden ? "" : `${entry.error.textContent} `) + item + message.replace(/^Value error, /, "");
        entry.error.hidden = false;
        entry.input.setAttribute("aria-invalid", "true");
        entry.input.setAttribute("aria-describedby", entry.error.id);
        first ||= entry.input;
      }
      if (first) ui.error.textContent = "Not saved: check the fields marked below.";
      first?.focus();
    }

    function notice(text, action) {
      ui.notice.replaceChildren(el("span", "", text), ...(action ? [action] : []));
      ui.notice.hidden = false;
    }

    // ---- open and close -------------------------------------------------------------------
    /** Opens `row` (a saved lead, or a search result carrying its id); `returnFocus` runs on close. */
    function open(row, returnFocus) {
      const lead = { ...row };
      delete lead.rowKey; // a search result's own key, not part of the lead
      Object.assign(state, { returnFocus, write: null, loading: null, gone: false });
      focusBack = returnFocus;
      ui.notice.hidden = true;
      ui.status.textContent = "";
      clearErrors();
      fill(lead);
      setEnabled(true);
      if (!dialog.open) dialog.showModal();
      inputs.get("name").input.focus();
      // A search result carries the person's fields; the saved lead may differ, so fetch it.
      if (!lead.updatedAt) load(lead.id);
    }

    async function load(id) {
      state.loading = [];
      setEnabled(false);
      ui.status.textContent = "Loading…";
      let lead;
      try {
        lead = await client.api(leadPath(id));
      } catch (err) {
        if (state.lead?.id !== id) return;
        state.loading = null;
        if (err.status === 404) return deletedElsewhere();
        ui.status.textContent = `Could not load this lead: ${err.message}.`;
        return;
      }
      if (state.lead?.id !== id || !dialog.open) return;
      const during = state.loading;
      state.loading = null;
      ui.status.textContent = "";
      fill(lead);
      setEnabled(true);
      for (const change of during) route(change);
    }

    function close() {
      if (dialog.open) dialog.close();
    }

    function onClosed() {
      const back = state.returnFocus;
      Object.assign(state, { lead: null, returnFocus: null, write: null, loading: null, gone: false });
      back?.();
    }

    // ---- saving -----------------------------------------------------------------------------
    async function save(e) {
      e.preventDefault();
      if (state.gone || (state.write && !state.write.answer) || !state.lead) return;
      const fields = changedFields();
      if (Object.keys(fields).length === 0) {
        ui.status.textContent = "Nothing to save: no field changed.";
        return;
      }
      clearErrors();
      ui.notice.hidden = true;
      const write = { before: state.lead, answer: null, buffer: [] };
      state.write = write;
      ui.save.disabled = true;
      ui.status.textContent = "Saving…";
      let answer;
      try {
        answer = await client.api(leadPath(state.lead.id), { method: "PATCH", body: fields });
      } catch (err) {
        if (state.write !== write) return; // the drawer moved on
        state.write = null;
        ui.save.disabled = false;
        ui.status.textContent = "";
        if (err.status === 404) return deletedElsewhere();
        if (err.status === 400 || err.status === 422) showErrors(err);
        else ui.status.textContent = `Could not save: ${err.message}. Your edits are still here; try again.`;
        for (const change of write.buffer) route(change);
        return;
      }
      if (state.write !== write) return;
      ui.save.disabled = false;
      write.answer = answer;
      fill(answer);
      ui.status.textContent = "Saved.";
      // A PATCH that changed nothing stored makes no change in the feed: none to wait for.
      if (answer.updatedAt === write.before.updatedAt) state.write = null;
      const buffered = write.buffer;
      write.buffer = [];
      for (const change of buffered) route(change);
    }

    // ---- the feed -----------------------------------------------------------------------------
    // Changes of the open lead arrive here in version order. This tab knows its own write
    // by its PATCH answer: the change whose record is exactly that answer (same updatedAt
    // and fields). Until it passes, other changes of the lead are older than this tab's
    // write, which won; after it, they are later writes by someone else, which win.
    function route(change) {
      if (state.loading) return state.loading.push(change);
      const write = state.write;
      if (write && !write.answer) return write.buffer.push(change); // wait for the answer
      if (change.op === "delete") return deletedElsewhere();
      if (write) {
        if (same(change.lead, write.answer)) state.write = null; // our own write
        return; // an earlier write than ours: the answer shown already includes it
      }
      if (!same(change.lead, state.lead)) changedElsewhere(change.lead);
    }

    function changedElsewhere(lead) {
      const mine = changedFields(); // unsaved edits, kept as a choice
      fill(lead);
      const edits = Object.keys(mine).length > 0;
      const restore = edits && button("Put my edits back", "link-button", () => {
        for (const [key, value] of Object.entries(mine)) {
          const { input, kind } = inputs.get(key);
          input.value = fromLead({ [key]: value }, key, kind);
        }
        ui.notice.hidden = true;
        inputs.get(Object.keys(mine)[0]).input.focus();
      });
      notice(edits ? "Changed by someone else — showing the current version. Your unsaved edits were set aside. "
        : "Changed by someone else — showing the current version.", restore || null);
      ui.status.textContent = "";
    }

    function deletedElsewhere() {
      state.gone = true;
      state.write = null;
      setEnabled(false);
      ui.status.textContent = "";
      notice("This lead was deleted by someone else; nothing here can be saved.");
    }

    /** Changes of the org, in version order (the saved leads' feed). */
    function applyChanges(changes) {
      if (!dialog.open || !state.lead || state.gone) return;
      for (const change of changes) if (change.id === state.lead.id) route(change);
    }

    /** The feed skipped ahead (the saved list reloaded): fetch the open lead again. */
    async function resync() {
      if (!dialog.open || !state.lead || state.gone || state.loading) return;
      const id = state.lead.id;
      state.write = null; // its change may be among those skipped
      try {
        const lead = await client.api(leadPath(id));
        if (state.lead?.id === id && !state.gone && !same(lead, state.lead) && lead.updatedAt > state.lead.updatedAt) {
          changedElsewhere(lead);
        }
      } catch (err) {
        if (err.status === 404 && state.lead?.id === id) deletedElsewhere();
      }
    }

    function deleteLead() {
      const lead = state.lead;
      if (!lead || state.gone) return;
      state.returnFocus = null; // focus goes to the Undo button instead
      close();
      deletes.schedule(lead);
    }

    ui.form.addEventListener("submit", save);
    part("x").addEventListener("click", close);
    part("close").addEventListener("click", close);
    ui.del.addEventListener("click", deleteLead);
    dialog.addEventListener("close", onClosed);
    // A click on the backdrop (outside the panel) closes it, as Escape does.
    dialog.addEventListener("click", (e) => {
      if (e.target === dialog) close();
    });

    return {
      open, close, applyChanges, resync,
      isDeleting: (id) => deletes.has(id),
      get leadId() {
        return dialog.open ? state.lead?.id : null;
      },
    };
  }

  ns.createLeadDrawer = createLeadDrawer;
})(window);
