"use strict";
// One chat conversation over the client's socket, without a DOM: what was said,
// replies assembled from streamed pieces, tool steps, export jobs, Stop, and
// recovery after a dropped connection (chat:resume). chat.js draws it.
//
//   const session = Leadstream.createChatSession({ client, storage, storageKey });
//   session.on("text", ({ reply, text }) => ...);  // returns a function that unsubscribes
//   session.start();                               // reopens the remembered conversation
//
// Methods
//   start()                  reopens the conversation remembered in `storage`, else "empty"
//   send(text) -> Promise<boolean>  sends a message (false: not sent, or refused up front)
//   stop()                   stops the reply being written (after the send ack, if pending)
//   open(conversationId)     replaces the transcript with a stored conversation
//   newConversation()        an empty transcript; the next message starts a conversation
//   conversations(more) -> Promise<{conversations, more}>  the user's conversations, newest
//                            first; `more` true continues after the last page asked for
//   on(event, fn) -> unsubscribe
// Read-only: conversationId, generating, connection ({state, problem}), connected, base.
//
// Events (one argument each), in the order things happen:
//   "connection"   {state, problem}   connecting | connected | reconnecting | offline
//   "reconnected"  undefined          the socket is back (unfinished replies are resuming)
//   "conversation" id | null          the conversation followed changed
//   "transcript"   {state, ...}       "empty" {newChat} | "loading" {conversationId} |
//                                     "failed" {conversationId, error} | "restoring" (stored
//                                     messages follow) | "restored" {empty}
//   "message"      {text, live}       a user message (live: just sent from here)
//   "reply"        {reply}            an assistant reply begins (busy until "finished")
//   "text"         {reply, text}      `text` appended to reply.text
//   "tool"         {reply, tool, event, live}  a tool step (event: chat:tool or a stored call)
//   "export"       {reply, tool, update}  the export job of a tool step: update null (now
//                                     followed), an export:* update, or {event: "export:unavailable"}
//   "note"         {reply, kind, error, text}  not_sent (text: what to give back) |
//                                     stop_failed | resume_failed | error
//   "finished"     {reply, outcome}   outcome "stopped" | "failed" | null
//   "generating"   boolean            a reply asked for here (or still streaming) is on
//   "stopping"     boolean            Stop was asked for / could not be done
// A reply is {messageId, conversationId, text, length (code points), tools: Map callId ->
// tool, done, outcome}; a tool is {callId, name, status, args, summary, error, progress,
// result, jobId}.

(function (global) {
  const ns = global.Leadstream;
  const { randomId } = ns.ui;
  const SEND_ATTEMPTS = 3; // chat:send is idempotent per clientMessageId, so retrying is safe
  const MESSAGE_PAGES = 10;
  const CONVERSATION_PAGE = 30;

  /**
   * @param {object} o
   * @param {object} o.client  from Leadstream.createClient
   * @param {Storage} [o.storage]  remembers the open conversation under `storageKey`
   * @param {string} [o.storageKey]
   */
  function createChatSession({ client, storage = null, storageKey = "" }) {
    const listeners = new Map(); // event -> Set of fn
    const state = {
      conversationId: null,
      pending: null, // {reply, stopWanted} while chat:send waits for its ack
      active: null, // the reply this tab asked for (or found streaming), while it is generating
      replies: new Map(), // messageId -> reply
      awaitingExport: [], // [reply, tool] of export steps whose job id has not arrived yet
      generation: 0, // bumps when the transcript is replaced, so late answers are dropped
      historyCursor: null,
    };

    function on(event, fn) {
      if (!listeners.has(event)) listeners.set(event, new Set());
      listeners.get(event).add(fn);
      return () => listeners.get(event).delete(fn);
    }

    function emit(event, data) {
      for (const fn of listeners.get(event) || []) fn(data);
    }

    // ---- replies -----------------------------------------------------------------
    function newReply(messageId, conversationId) {
      const reply = { messageId, conversationId, text: "", length: 0, tools: new Map(),
        done: false, outcome: null, resuming: false };
      if (messageId) state.replies.set(messageId, reply);
      emit("reply", { reply });
      return reply;
    }

    function adopt(reply, messageId) {
      if (reply.messageId) return;
      reply.messageId = messageId;
      state.replies.set(messageId, reply);
    }

    // `text` starts at char `offset` (code points, as the server counts): add only what is new.
    function appendText(reply, text, offset) {
      if (offset > reply.length) return resume(reply); // a piece went missing
      const fresh = Array.from(text).slice(reply.length - offset);
      if (fresh.length === 0) return;
      const added = fresh.join("");
      reply.length += fresh.length;
      reply.text += added;
      emit("text", { reply, text: added });
    }

    function note(reply, kind, error, text) {
      emit("note", { reply, kind, error, text });
    }

    function finish(reply, outcome) {
      if (reply.done) return;
      reply.done = true;
      reply.outcome = outcome;
      emit("finished", { reply, outcome });
      if (state.active === reply) endGenerating();
    }

    // ---- tool steps and their export jobs ------------------------------------------
    // One chat:tool event (or a stored toolCalls entry) applied to its step.
    function applyTool(reply, ev, live) {
      let tool = reply.tools.get(ev.callId);
      if (!tool) {
        tool = { callId: ev.callId, name: ev.name, jobId: null };
        reply.tools.set(ev.callId, tool);
      }
      if (tool.jobId) return; // an export step already follows its job
      Object.assign(tool, { status: ev.status, args: ev.args, summary: ev.summary, error: ev.error,
        progress: ev.progress, result: ev.result });
      emit("tool", { reply, tool, event: ev, live });
      if (ev.status !== "done" || ev.name !== "export_leads") return;
      const jobId = ev.result?.jobId;
      if (jobId) followExport(reply, tool, jobId, !live);
      else if (live) awaitExport(reply, tool);
    }

    // A server before protocol 2 sends no jobId in chat:tool: pair the step with the next unclaimed job.
    function awaitExport(reply, tool) {
      const jobId = client.takeOrphanJob();
      if (jobId) followExport(reply, tool, jobId, false);
      else state.awaitingExport.push([reply, tool]);
    }

    function onOrphanJob() {
      if (state.awaitingExport.length === 0) return;
      const jobId = client.takeOrphanJob();
      if (jobId) followExport(...state.awaitingExport.shift(), jobId, false);
    }

    function followExport(reply, tool, jobId, askServer) {
      tool.jobId = jobId;
      emit("export", { reply, tool, update: null });
      client.watchJob(jobId, (update) => emit("export", { reply, tool, update }));
      if (!askServer) return;
      client.job(jobId).then((info) => {
        const update = client.jobUpdate(info);
        if (update) emit("export", { reply, tool, update });
      }, () => emit("export", { reply, tool, update: { event: "export:unavailable", jobId } }));
    }

    // ---- sending, stopping, resuming ----------------------------------------------
    const isGenerating = () => Boolean(state.pending || state.active);

    function setGenerating(on) {
      emit("generating", on);
    }

    function endGenerating() {
      state.pending = null;
      state.active = null;
      setGenerating(false);
    }

    async function send(text) {
      text = (text || "").trim();
      if (!text || isGenerating() || client.state !== "connected") return false;
      emit("message", { text, live: true });
      const reply = newReply(null, state.conversationId);
      state.pending = { reply, stopWanted: false };
      state.active = reply;
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
        note(reply, "not_sent", ack.error, text);
        finish(reply, null);
        return false;
      }
      setConversation(ack.conversationId);
      reply.conversationId = ack.conversationId;
      adopt(reply, ack.messageId);
      if (reply.done) endGenerating(); // chat:done overtook the ack
      else if (stopWanted) stop();
      return true;
    }

    async function stop() {
      if (!isGenerating()) return;
      emit("stopping", true);
      if (state.pending) {
        state.pending.stopWanted = true; // sent once the ack names the conversation
        return;
      }
      const ack = await client.request("chat:stop", { conversationId: state.conversationId });
      if (!ack.ok) {
        emit("stopping", false);
        if (state.active) note(state.active, "stop_failed", ack.error);
        return;
      }
      // Stopped: chat:done {stopped: true} finishes the reply. Not stopped: the reply had
      // already ended and its last events are on their way.
      if (!ack.stopped || state.active?.done) endGenerating();
    }

    // Fetches reply text from what we have on, after a reconnect or a gap in deltas.
    async function resume(reply) {
      if (reply.resuming || reply.done || !reply.messageId) return;
      reply.resuming = true;
      const offset = reply.length;
      const ack = await client.request("chat:resume", {
        conversationId: reply.conversationId, messageId: reply.messageId, offset,
      });
      reply.resuming = false;
      if (!ack.ok) {
        if (ack.error?.code === "timeout") return; // the next reconnect tries again
        note(reply, "resume_failed", ack.error);
        return finish(reply, null);
      }
      appendText(reply, ack.text || "", offset);
      if (ack.done) syncFinished(reply);
    }

    // A reply that ended while we were away: its tool steps and outcome come from REST.
    async function syncFinished(reply) {
      try {
        const messages = await fetchMessages(reply.conversationId);
        const message = messages.find((m) => m.id === reply.messageId);
        for (const call of message?.toolCalls || []) applyTool(reply, toolEvent(call), false);
        finish(reply, message?.status);
      } catch {
        finish(reply, null);
      }
    }

    // ---- server events -------------------------------------------------------------
    // Events reach every tab of the user: follow only this session's conversation, adopting
    // its id when events of a new conversation overtake the chat:send ack.
    function follows(conversationId) {
      if (!state.conversationId && state.pending && conversationId) setConversation(conversationId);
      return Boolean(conversationId) && conversationId === state.conversationId;
    }

    function replyFor(ev) {
      if (!follows(ev.conversationId) || !ev.messageId) return null;
      const known = state.replies.get(ev.messageId);
      if (known) return known;
      const pending = state.pending?.reply;
      if (pending && !pending.messageId) {
        adopt(pending, ev.messageId);
        pending.conversationId = ev.conversationId;
        return pending;
      }
      return newReply(ev.messageId, ev.conversationId); // a reply asked for in another tab
    }

    function onDelta(ev) {
      const reply = replyFor(ev);
      if (reply) appendText(reply, ev.text || "", ev.offset ?? 0);
    }

    function onTool(ev) {
      const reply = replyFor(ev);
      if (reply) applyTool(reply, ev, true);
    }

    function onDone(ev) {
      const reply = replyFor(ev);
      if (reply) finish(reply, ev.stopped ? "stopped" : null);
    }

    function onError(ev) {
      const reply = ev.messageId ? replyFor(ev) : follows(ev.conversationId) && state.active;
      if (!reply) return;
      note(reply, "error", ev.error);
      finish(reply, null);
    }

    function onReconnect() {
      for (const reply of state.replies.values()) if (!reply.done) resume(reply);
      emit("reconnected");
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
      emit("conversation", id);
    }

    function resetTranscript() {
      state.generation += 1;
      state.replies.clear();
      state.awaitingExport = [];
      endGenerating();
    }

    function newConversation() {
      resetTranscript();
      setConversation(null);
      emit("transcript", { state: "empty", newChat: true });
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

    function restore(message, conversationId) {
      if (message.role === "user") return emit("message", { text: message.text || "", live: false });
      const reply = newReply(message.id, conversationId);
      for (const call of message.toolCalls || []) applyTool(reply, toolEvent(call), false);
      appendText(reply, message.text || "", 0);
      if (message.status === "streaming") {
        state.active = reply; // still being written (another tab asked): Stop applies to it
        setGenerating(true);
        return resume(reply);
      }
      finish(reply, message.status === "stopped" || message.status === "failed" ? message.status : null);
    }

    async function open(conversationId) {
      resetTranscript();
      const generation = state.generation;
      setConversation(conversationId);
      emit("transcript", { state: "loading", conversationId });
      let messages;
      try {
        messages = await fetchMessages(conversationId);
      } catch (err) {
        if (generation !== state.generation) return;
        if (err.status === 404 || err.status === 403) return newConversation();
        emit("transcript", { state: "failed", conversationId, error: err });
        return;
      }
      if (generation !== state.generation) return;
      emit("transcript", { state: "restoring", conversationId });
      for (const message of messages) restore(message, conversationId);
      emit("transcript", { state: "restored", conversationId, empty: messages.length === 0 });
    }

    async function conversations(more = false) {
      const cursor = more ? state.historyCursor : null;
      const data = await client.api(`/api/conversations?limit=${CONVERSATION_PAGE}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`);
      state.historyCursor = data.nextCursor;
      return { conversations: data.conversations || [], more: Boolean(data.nextCursor) };
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
      else emit("transcript", { state: "empty", newChat: false });
    }

    client.on("state", (connection) => emit("connection", connection));
    client.on("connect", onReconnect);
    client.on("chat:delta", onDelta);
    client.on("chat:tool", onTool);
    client.on("chat:done", onDone);
    client.on("chat:error", onError);
    client.on("job:orphan", onOrphanJob);

    return {
      on, start, send, stop, open, newConversation, conversations,
      get conversationId() { return state.conversationId; },
      get generating() { return isGenerating(); },
      get connection() { return { state: client.state, problem: client.problem }; },
      get connected() { return client.state === "connected"; },
      get base() { return client.base; },
    };
  }

  ns.createChatSession = createChatSession;
})(window);
