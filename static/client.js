"use strict";
// Leadstream client: the token, REST calls, acknowledged Socket.IO requests, the
// connection state and export jobs. Shared by the page (app.js) and the
// embeddable widget (widget.js); both find it at window.Leadstream.createClient.
// Wire contract: PROTOCOL.md.

(function (global) {
  const ns = global.Leadstream || (global.Leadstream = {});
  const ACK_TIMEOUT_MS = 10000;
  const ORPHAN_KEEP_MS = 30000; // export events nobody claimed yet, kept for a late claimer
  const RATE_LIMIT_ATTEMPTS = 4;
  const RATE_LIMIT_WAIT_MAX_S = 10;
  const RECONNECT_DELAY_MS = 2000;
  const RECONNECT_DELAY_MAX_MS = 30000;
  const RENEW_EVERY_MS = 10000; // a token refused right after renewal is not renewed again
  const SESSION_ENDED = "Your session has expired. Reload the page with a new sign-in link.";

  class ApiError extends Error {
    constructor(status, body, retryAfter) {
      super(body?.error?.message || (status ? `HTTP ${status}` : "the server cannot be reached"));
      this.status = status;
      this.code = body?.error?.code || (status ? "http_error" : "network_error");
      this.details = body?.error?.details; // e.g. {fields: [{field, message}]} of a 422
      this.retryAfter = retryAfter;
    }
  }

  // A bearer token: the one given (?token=, data-token), else a dev-mode demo token.
  async function obtainToken(base, given) {
    if (given) return given;
    const data = await fetchJson(base, "/api/dev/token", {
      method: "POST",
      body: { org: "demo", user: "demo" },
    });
    if (!data?.token) throw new ApiError(500, null);
    return data.token;
  }

  // GET requests refused with 429 wait out Retry-After and try again, a few times.
  async function fetchJson(base, path, options = {}) {
    for (let attempt = 1; ; attempt += 1) {
      try {
        return await fetchOnce(base, path, options);
      } catch (err) {
        const method = options.method || "GET";
        if (err.status !== 429 || method !== "GET" || attempt >= RATE_LIMIT_ATTEMPTS) throw err;
        await sleep(Math.min(Number(err.retryAfter) || 1, RATE_LIMIT_WAIT_MAX_S) * 1000, options.signal);
      }
    }
  }

  function sleep(ms, signal) {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(resolve, ms);
      signal?.addEventListener("abort", () => {
        clearTimeout(timer);
        reject(new DOMException("aborted", "AbortError"));
      }, { once: true });
    });
  }

  // keepalive: the request outlives the page (a DELETE sent as the tab closes).
  async function fetchOnce(base, path, { method = "GET", body, token, signal, keepalive = false } = {}) {
    const headers = {};
    if (token) headers.Authorization = `Bearer ${token}`;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let res;
    try {
      res = await fetch(new URL(path, base), {
        method, headers, signal, keepalive, credentials: "omit",
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (err) {
      if (err.name === "AbortError") throw err;
      throw new ApiError(0, null);
    }
    const data = res.status === 204 ? null : await res.json().catch(() => null);
    if (!res.ok) throw new ApiError(res.status, data, res.headers.get("Retry-After"));
    return data;
  }

  // Connection states shown to people: connecting, connected, reconnecting, offline.
  // renewToken (dev mode only): gets a new token when the server ends the session.
  function createClient({ base, token, io, renewToken = null }) {
    const listeners = new Map(); // event -> [fn]
    const jobs = new Map(); // jobId -> {watchers: [fn], last}
    const orphans = new Map(); // jobId -> {update, at}: export events nobody follows yet
    const client = { base, token, state: "connecting", problem: "", socket: null };

    function emitLocal(event, data) {
      for (const fn of listeners.get(event) || []) fn(data);
    }

    client.on = (event, fn) => {
      if (!listeners.has(event)) listeners.set(event, []);
      listeners.get(event).push(fn);
    };

    client.api = (path, options = {}) => fetchJson(base, path, { ...options, token: client.token });

    // GET /api/jobs/{id}: where an export or import job is.
    client.job = (jobId) => client.api(`/api/jobs/${encodeURIComponent(jobId)}`);

    // Resolves to the ack, or to an error ack on timeout: callers handle one shape.
    client.request = async (event, payload) => {
      try {
        const ack = await client.socket.timeout(ACK_TIMEOUT_MS).emitWithAck(event, payload);
        if (ack && typeof ack === "object") return ack;
        return { ok: false, error: { code: "bad_ack", message: `Unexpected answer to ${event}` } };
      } catch {
        return { ok: false, error: { code: "timeout", message: "The server did not answer in time" } };
      }
    };

    function setState(state, problem = "") {
      client.state = state;
      client.problem = problem;
      emitLocal("state", { state, problem });
    }

    // ---- export jobs: events reach every tab of the user, so work is claimed by jobId
    function recordExport(event, data) {
      const job = jobs.get(data.jobId);
      const update = { event, ...data };
      if (job) {
        job.last = update;
        for (const fn of job.watchers) fn(update);
        return;
      }
      orphans.set(data.jobId, { update, at: Date.now() });
      emitLocal("job:orphan", data.jobId);
    }

    // Follows a job; replays what already arrived for it.
    client.watchJob = (jobId, fn) => {
      let job = jobs.get(jobId);
      if (!job) {
        job = { watchers: [], last: orphans.get(jobId)?.update || null };
        jobs.set(jobId, job);
        orphans.delete(jobId);
      }
      job.watchers.push(fn);
      if (job.last) fn(job.last);
    };

    // Claims the oldest recent export nobody follows (for a chat card that learns no
    // jobId); watchJob(jobId) then replays what arrived for it.
    client.takeOrphanJob = () => {
      const now = Date.now();
      for (const [jobId, { update, at }] of orphans) {
        orphans.delete(jobId);
        if (now - at >= ORPHAN_KEEP_MS) continue;
        jobs.set(jobId, { watchers: [], last: update });
        return jobId;
      }
      return null;
    };

    // After a reconnect: ask REST for jobs whose events may have been missed.
    async function resyncJobs() {
      for (const [jobId, job] of jobs) {
        const kind = job.last?.event;
        if (kind === "export:ready" || kind === "export:failed") continue;
        try {
          const update = jobUpdate(await client.job(jobId));
          if (update) recordExport(update.event, update);
        } catch {
          // the next reconnect or event brings it
        }
      }
    }

    client.jobUpdate = jobUpdate;

    // The server ends a socket whose token expired ("io server disconnect") and
    // refuses an expired token: renew it and reconnect where we can, else say so.
    let renewedAt = 0;
    async function sessionEnded(socket, problem) {
      if (!renewToken || Date.now() - renewedAt < RENEW_EVERY_MS) {
        setState("offline", problem);
        return;
      }
      renewedAt = Date.now();
      setState("reconnecting");
      try {
        client.token = await renewToken();
      } catch {
        setState("offline", problem);
        return;
      }
      socket.auth.token = client.token;
      socket.connect();
    }

    client.connect = () => {
      const socket = io(base, {
        auth: { token: client.token },
        transports: ["websocket"],
        // Full jitter: after a server restart, its pages come back spread over
        // seconds (0-4 s, then 0-8 s, ... up to 30 s) instead of all at once.
        reconnectionDelay: RECONNECT_DELAY_MS,
        reconnectionDelayMax: RECONNECT_DELAY_MAX_MS,
        randomizationFactor: 1,
      });
      client.socket = socket;
      socket.on("connect", () => {
        setState("connected");
        emitLocal("connect", null);
        resyncJobs();
      });
      socket.on("disconnect", (reason) => {
        if (reason === "io server disconnect") sessionEnded(socket, SESSION_ENDED);
        else setState(socket.active ? "reconnecting" : "offline");
      });
      socket.on("connect_error", (err) => {
        if (err.data?.code === "unauthorized") {
          sessionEnded(socket, `The server refused the token: ${err.data.message}. ${SESSION_ENDED}`);
          return;
        }
        setState(socket.active ? "reconnecting" : "offline", err.data?.message || "");
      });
      for (const event of ["export:progress", "export:ready", "export:failed"]) {
        socket.on(event, (data) => data?.jobId && recordExport(event, data));
      }
      const relayed = ["chat:delta", "chat:tool", "chat:done", "chat:error", "leads:batch", "leads:changes",
        "import:progress", "import:done"];
      for (const event of relayed) socket.on(event, (data) => data && emitLocal(event, data));
    };

    return client;
  }

  // GET /api/jobs/{id} as the export event it stands for (null while queued).
  function jobUpdate(info) {
    const base = { jobId: info.jobId, done: info.done, total: info.total };
    if (info.status === "done") return { event: "export:ready", ...base, rows: info.result?.rows, url: info.result?.url };
    if (info.status === "failed") return { event: "export:failed", ...base, error: info.error };
    if (info.status === "running") return { event: "export:progress", ...base };
    return null;
  }

  ns.ApiError = ApiError;
  ns.obtainToken = obtainToken;
  ns.createClient = createClient;
})(window);
