// The chat room client: JSON frames as apps/realtime/PROTOCOL.md describes.
// Text is always inserted with textContent, never as HTML.
(function () {
  "use strict";
  const root = document.getElementById("chat");
  if (!root) return;
  const log = document.getElementById("chat-log");
  const online = document.getElementById("online");
  const status = document.getElementById("chat-status");
  const form = document.getElementById("chat-form");
  const input = document.getElementById("chat-input");
  const errorBox = document.getElementById("chat-error");
  const olderButton = document.getElementById("load-older");
  const seen = new Set();
  let lastId = null;
  let oldestId = null;
  let socket = null;
  let attempt = 0;
  let reconnectTimer = null;

  function setStatus(text, ok) {
    status.textContent = text;
    status.classList.toggle("ok", !!ok);
  }

  function render(message) {
    const item = document.createElement("li");
    item.className = "chat-message";
    item.dataset.id = message.id;
    const who = document.createElement("span");
    who.className = "chat-user";
    who.textContent = message.user;
    const when = document.createElement("time");
    when.dateTime = message.sent_at;
    when.textContent = new Date(message.sent_at).toLocaleTimeString();
    const body = document.createElement("p");
    body.className = "chat-text";
    body.textContent = message.body;
    item.append(who, when, body);
    return item;
  }

  function append(messages) {
    const atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 40;
    for (const message of messages) {
      if (seen.has(message.id)) continue;
      seen.add(message.id);
      // Keep the log in id order even if a live message raced the history.
      let before = null;
      for (const node of log.children) {
        if (Number(node.dataset.id) > message.id) { before = node; break; }
      }
      log.insertBefore(render(message), before);
      lastId = lastId === null ? message.id : Math.max(lastId, message.id);
      oldestId = oldestId === null ? message.id : Math.min(oldestId, message.id);
    }
    if (atBottom) log.scrollTop = log.scrollHeight;
  }

  function prepend(messages, hasMore) {
    const height = log.scrollHeight;
    for (const message of messages.slice().reverse()) {
      if (seen.has(message.id)) continue;
      seen.add(message.id);
      log.insertBefore(render(message), log.firstChild);
      oldestId = oldestId === null ? message.id : Math.min(oldestId, message.id);
    }
    log.scrollTop += log.scrollHeight - height;
    olderButton.hidden = !hasMore;
  }

  // Who is online: the welcome's list, then the presence frames' joined/left deltas.
  const present = new Set();

  function showOnline() {
    online.replaceChildren(...Array.from(present).sort().map(function (name) {
      const li = document.createElement("li");
      li.textContent = name;
      return li;
    }));
  }

  function connect() {
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    let url = scheme + location.host + root.dataset.socketPath;
    if (lastId !== null) url += "?after=" + encodeURIComponent(lastId);
    setStatus(attempt ? "reconnecting…" : "connecting…", false);
    socket = new WebSocket(url);
    socket.addEventListener("open", function () {
      attempt = 0;
      setStatus("connected", true);
      errorBox.textContent = "";
    });
    socket.addEventListener("message", function (event) {
      let data;
      try { data = JSON.parse(event.data); } catch (e) { return; }
      if (data.type === "welcome") {
        const firstJoin = lastId === null;
        append(data.messages);
        for (const message of data.messages) {
          if (message.client_id) delete pending[message.client_id];
        }
        for (const clientId of Object.keys(pending)) resend(clientId);  // unanswered before the drop
        present.clear();
        for (const name of data.online) present.add(name);
        showOnline();
        if (firstJoin) olderButton.hidden = !data.has_more;
      } else if (data.type === "message") {
        if (data.client_id) delete pending[data.client_id];
        append([data]);
      } else if (data.type === "history") {
        historyPending = false;
        prepend(data.messages, data.has_more);
      } else if (data.type === "presence") {
        for (const name of data.joined) present.add(name);
        for (const name of data.left) present.delete(name);
        showOnline();
      } else if (data.type === "error") {
        errorBox.textContent = data.message;
        const retry = data.code === "unavailable" || data.code === "rate_limited";
        if (retry && data.client_id && pending[data.client_id]) {
          // Resent under the same client_id: stored at most once, however often it is sent.
          setTimeout(function () { resend(data.client_id); }, 1000 * (data.retry_after || 5));
        } else if (data.client_id) {
          delete pending[data.client_id];  // refused for good (too long, empty): not resent
        }
      }
    });
    socket.addEventListener("close", function (event) {
      socket = null;
      if (event.code === 1008 || event.code === 4401) {
        setStatus("disconnected: please log in again", false);
        return;
      }
      // Exponential backoff with jitter: 0.5 s, 1 s, 2 s … capped at 30 s.
      const delay = Math.min(30000, 500 * Math.pow(2, attempt)) * (0.5 + Math.random() / 2);
      attempt += 1;
      setStatus("disconnected; retrying in " + Math.round(delay / 1000) + " s", false);
      reconnectTimer = setTimeout(connect, delay);
    });
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    const body = input.value.trim();
    if (!body) return;
    if (!socket || socket.readyState !== WebSocket.OPEN) {
      errorBox.textContent = "Not connected; the message was not sent.";
      return;
    }
    const clientId = crypto.randomUUID ? crypto.randomUUID() : String(Date.now()) + Math.random();
    pending[clientId] = body;
    resend(clientId);
    input.value = "";
  });

  // Messages sent and not yet seen back (by client_id): resent after a reconnect or an
  // "unavailable" answer; the server stores each client_id once.
  const pending = {};
  function resend(clientId) {
    if (pending[clientId] === undefined || !socket || socket.readyState !== WebSocket.OPEN) return;
    socket.send(JSON.stringify({ type: "message", body: pending[clientId], client_id: clientId }));
  }

  let historyPending = false;
  function loadOlder() {
    if (historyPending || olderButton.hidden || oldestId === null) return;
    if (socket && socket.readyState === WebSocket.OPEN) {
      historyPending = true;
      socket.send(JSON.stringify({ type: "history", before: oldestId }));
    }
  }
  olderButton.addEventListener("click", loadOlder);
  // Scrolling to the top of the log loads the messages before it.
  log.addEventListener("scroll", function () {
    if (log.scrollTop < 20) loadOlder();
  });

  window.addEventListener("online", function () {
    if (!socket) { clearTimeout(reconnectTimer); attempt = 0; connect(); }
  });
  connect();
})();
