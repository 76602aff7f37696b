"use strict";
// CSV import in the page: a file picked with "Import CSV" or dropped on the saved
// leads is uploaded to POST /api/leads/import; its job then reports import:progress
// (rows read, bytes of the file) and import:done (saved, updated, errors by line),
// shown in the import panel. The new leads reach every tab of the org through
// leads:changes, as any saved lead does. Wire contract: PROTOCOL.md.

(function (global) {
  const ns = global.Leadstream;
  const { el, button, count, plural } = ns.ui;
  const ERRORS_SHOWN = 20; // more are behind "Show all"
  const CSV_TYPES = ["text/csv", "application/csv", "application/vnd.ms-excel"];

  const sizeFormat = new Intl.NumberFormat(undefined, { maximumFractionDigits: 1 });
  function size(bytes) {
    if (bytes < 1024) return plural(bytes, "byte", "bytes");
    if (bytes < 1024 * 1024) return `${sizeFormat.format(bytes / 1024)} KB`;
    return `${sizeFormat.format(bytes / (1024 * 1024))} MB`;
  }

  // A server message as a sentence: "the file is empty" -> "The file is empty."
  function sentence(text) {
    const trimmed = String(text).trim();
    return `${trimmed.charAt(0).toUpperCase()}${trimmed.slice(1)}${/[.!?]$/.test(trimmed) ? "" : "."}`;
  }

  function isCsv(file) {
    return /\.csv$/i.test(file.name) || CSV_TYPES.includes(file.type);
  }

  // What an upload refused by the server means to the person who sent it.
  function refusal(status, body) {
    const error = body?.error || {};
    if (status === 413) {
      const limit = error.details?.maxBytes;
      return `The file is too large${limit ? `: the limit is ${size(limit)}` : ""}. Split it into smaller files and import each.`;
    }
    if (status === 429 && error.code === "too_many_jobs") {
      return sentence(error.message || "too many imports or exports are running; try again when one has finished");
    }
    if (status === 429) return "Too many requests just now; wait a few seconds, then import again.";
    if (status === 401) return "Your session has expired. Reload the page, then import again.";
    if (status === 0) return "The server cannot be reached. Check your connection, then import again.";
    if (error.message) return `The file was refused. ${sentence(error.message)}`;
    return `The upload failed (HTTP ${status}). Try again.`;
  }

  // POST the file as multipart/form-data; resolves to {status, body}, reports bytes sent.
  function upload(client, file, onSent) {
    return new Promise((resolve) => {
      const xhr = new XMLHttpRequest();
      xhr.open("POST", new URL("/api/leads/import", client.base));
      xhr.setRequestHeader("Authorization", `Bearer ${client.token}`);
      xhr.responseType = "json";
      xhr.upload.addEventListener("progress", (e) => onSent(e.loaded, e.lengthComputable ? e.total : file.size));
      xhr.addEventListener("load", () => resolve({ status: xhr.status, body: xhr.response }));
      xhr.addEventListener("error", () => resolve({ status: 0, body: null }));
      const form = new FormData();
      form.append("file", file, file.name);
      xhr.send(form);
    });
  }

  // root: the import panel; trigger: the "Import CSV" button; input: its file input;
  // dropZone: where a file may be dropped; onShowImported: shows the saved leads, newest first.
  function createImporter({ client, root, trigger, input, dropZone, onShowImported }) {
    // The import of this page: {file, jobId, phase: "uploading" | "running" | "done" | "failed",
    // sent, rows, bytes, totalBytes, result, message, showAll}
    let current = null;
    const early = []; // events that arrived while the upload's jobId was unknown

    const busy = () => current && (current.phase === "uploading" || current.phase === "running");

    async function start(file) {
      if (busy()) return;
      if (!isCsv(file)) {
        current = { file, phase: "failed", message: `“${file.name}” is not a CSV file. Choose a .csv file (in a spreadsheet: Save as CSV UTF-8).` };
        return show();
      }
      early.length = 0;
      current = { file, jobId: null, phase: "uploading", sent: 0, rows: 0, bytes: 0, totalBytes: file.size,
        result: null, message: "", showAll: false };
      show();
      const answer = await upload(client, file, (sent, total) => {
        if (current.phase !== "uploading") return;
        Object.assign(current, { sent, totalBytes: total });
        show();
      });
      if (answer.status !== 202 || !answer.body?.jobId) {
        Object.assign(current, { phase: "failed", message: refusal(answer.status, answer.body) });
        return show();
      }
      Object.assign(current, { jobId: answer.body.jobId, phase: "running" });
      // A small file can finish before the upload's answer arrives: replay what came.
      for (const [event, data] of early.splice(0)) onEvent(event, data);
      show();
    }

    // import:* events reach every tab of the user: only this page's job is shown.
    function onEvent(event, data) {
      if (!current || !data?.jobId) return;
      if (current.phase === "uploading") {
        early.push([event, data]);
        return;
      }
      if (data.jobId !== current.jobId || current.phase !== "running") return;
      if (event === "import:progress") {
        Object.assign(current, { rows: data.rows, bytes: data.bytes, totalBytes: data.totalBytes });
      } else {
        finish(data, data.error);
      }
      show();
    }

    function finish(result, error) {
      current.result = error ? { ...result, error } : result;
      current.phase = error ? "failed" : "done";
      current.message = error ? `The import failed. ${sentence(error.message)}` : "";
    }

    // After a reconnect, events of the job may have been missed: ask REST where it is.
    async function resync() {
      if (current?.phase !== "running") return;
      const jobId = current.jobId;
      let info;
      try {
        info = await client.job(jobId);
      } catch {
        return; // the next event or reconnect brings it
      }
      if (current?.jobId !== jobId || current.phase !== "running") return;
      if (info.status === "done" || info.status === "failed") finish(info.result || {}, info.error);
      else Object.assign(current, { bytes: info.done, totalBytes: info.total || current.totalBytes });
      show();
    }

    // ---- the panel ----------------------------------------------------------------
    function show() {
      trigger.disabled = Boolean(busy());
      root.hidden = !current;
      if (!current) return root.replaceChildren();
      root.dataset.phase = current.phase;
      root.setAttribute("aria-busy", String(Boolean(busy())));
      const parts = [el("p", "import-title", title())];
      if (busy()) parts.push(progressBar(), el("p", "import-detail", detail()));
      if (current.message) parts.push(el("p", "import-message", current.message));
      if (current.result) parts.push(...summary(current.result));
      parts.push(actions());
      root.replaceChildren(...parts);
    }

    function title() {
      const name = current.file.name;
      if (current.phase === "uploading") return `Uploading “${name}”…`;
      if (current.phase === "running") return `Importing “${name}”…`;
      if (current.phase === "done") return `Imported “${name}”`;
      return `Could not import “${name}”`;
    }

    function progressBar() {
      const bar = el("progress", "import-progress");
      bar.setAttribute("aria-label", "Import progress");
      bar.dataset.testid = "import-progress";
      const done = current.phase === "uploading" ? current.sent : current.bytes;
      if (current.totalBytes) {
        bar.max = current.totalBytes;
        bar.value = Math.min(done, current.totalBytes);
      }
      return bar;
    }

    function detail() {
      const total = size(current.totalBytes || 0);
      if (current.phase === "uploading") return `${size(current.sent)} of ${total} sent`;
      if (!current.bytes) return "Waiting for the import to start…";
      return `${plural(current.rows, "row", "rows")} read · ${size(current.bytes)} of ${total}`;
    }

    function summary(result) {
      // A file that failed as a whole lists its reason as an error of line 1 too: said once.
      const reason = result.error?.message;
      const errors = (result.errors || []).filter((e) => !(e.line === 1 && e.message === reason));
      const omitted = result.errorsOmitted || 0;
      const failedRows = errors.length + omitted;
      const parts = [];
      if (current.phase === "done" || result.saved || result.updated) {
        const bits = [plural(result.saved || 0, "new lead", "new leads"), `${count(result.updated || 0)} updated`];
        if (failedRows) bits.push(plural(failedRows, "row with errors", "rows with errors"));
        const line = el("p", "import-counts", `${bits.join(" · ")}.`);
        line.dataset.testid = "import-counts";
        parts.push(line);
      }
      if (!errors.length) return parts;
      const shown = current.showAll ? errors : errors.slice(0, ERRORS_SHOWN);
      const list = el("ul", "import-errors");
      list.setAttribute("aria-label", "Rows that were not imported");
      list.dataset.testid = "import-errors";
      for (const { line, message } of shown) {
        const item = el("li");
        item.append(el("span", "import-line", `Line ${count(line)}`), ` ${message}`);
        list.append(item);
      }
      parts.push(list);
      const hidden = errors.length - shown.length;
      if (hidden > 0) {
        parts.push(button(`Show all ${count(errors.length)} errors (${count(hidden)} more)`, "link-button", () => {
          current.showAll = true;
          show();
        }));
      }
      if (omitted) parts.push(el("p", "import-detail", `${plural(omitted, "more row", "more rows")} with errors not listed.`));
      return parts;
    }

    function actions() {
      const bar = el("div", "import-actions");
      const imported = current.result && (current.result.saved || current.result.updated);
      if (imported) {
        const see = button("Show imported leads", "secondary", onShowImported);
        see.title = "The saved leads, newest first, without search or filters";
        bar.append(see);
      }
      if (!busy()) {
        bar.append(button("Import another file", "secondary", () => input.click()),
          button("Dismiss", "link-button", () => {
            current = null;
            show();
            trigger.focus();
          }));
      }
      return bar;
    }

    // ---- picking and dropping ---------------------------------------------------
    trigger.addEventListener("click", () => input.click());
    input.addEventListener("change", () => {
      const file = input.files?.[0];
      input.value = ""; // picking the same file again is a new import
      if (file) start(file);
    });

    const hasFiles = (e) => Array.from(e.dataTransfer?.types || []).includes("Files");
    dropZone.addEventListener("dragover", (e) => {
      if (!hasFiles(e)) return;
      e.preventDefault();
      e.dataTransfer.dropEffect = busy() ? "none" : "copy";
      dropZone.classList.add("import-dropping");
    });
    dropZone.addEventListener("dragleave", (e) => {
      if (!dropZone.contains(e.relatedTarget)) dropZone.classList.remove("import-dropping");
    });
    dropZone.addEventListener("drop", (e) => {
      if (!hasFiles(e)) return;
      e.preventDefault();
      dropZone.classList.remove("import-dropping");
      const file = e.dataTransfer.files[0];
      if (file && !busy()) start(file);
    });

    for (const event of ["import:progress", "import:done"]) client.on(event, (data) => onEvent(event, data));
    client.on("connect", resync);
    show();
    return { start };
  }

  ns.createImporter = createImporter;
})(window);
