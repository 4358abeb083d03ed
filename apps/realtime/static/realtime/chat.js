// The chat room client: JSON frames as apps/realtime/PROTOCOL.md describes.
// Text (file names too) is always inserted with textContent, never as HTML.
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
  let me = null;  // the welcome's "user": whose messages get a delete button

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
    item.append(who, when);
    if (message.user === me) {
      const remove = document.createElement("button");
      remove.type = "button";
      remove.className = "link-button chat-delete";
      remove.textContent = "delete";
      remove.addEventListener("click", function () {
        if (socket && socket.readyState === WebSocket.OPEN) {
          socket.send(JSON.stringify({ type: "delete", id: message.id }));
        }
      });
      item.append(remove);
    }
    if (message.body) item.append(body);
    if (message.file) item.append(renderFile(message.file));
    return item;
  }

  function formatBytes(n) {
    const units = ["bytes", "KiB", "MiB", "GiB", "TiB"];
    let unit = 0;
    while (n >= 1024 && unit < units.length - 1) { n /= 1024; unit += 1; }
    return unit ? n.toFixed(1) + " " + units[unit] : Math.round(n) + " " + units[0];
  }

  // A posted file: a download link for members, or a note once its owner deleted it.
  function renderFile(file) {
    const box = document.createElement("div");
    box.className = "chat-file" + (file.removed ? " removed" : "");
    if (file.removed) {
      box.textContent = file.name + " (the file was deleted)";
      return box;
    }
    const link = document.createElement("a");
    link.href = file.download_url;
    link.textContent = file.name;
    link.setAttribute("download", "");
    const size = document.createElement("span");
    size.textContent = formatBytes(file.size);
    const digest = document.createElement("code");
    digest.textContent = "SHA-256 " + file.sha256.slice(0, 12) + "…";
    digest.title = file.sha256;
    box.append(link, size, digest);
    return box;
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
        me = data.user;
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
      } else if (data.type === "deleted") {
        const node = log.querySelector('[data-id="' + Number(data.id) + '"]');
        if (node) node.remove();
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
    send({ body: body });
    input.value = "";
  });

  // Messages sent and not yet seen back (by client_id): resent after a reconnect or an
  // "unavailable" answer; the server stores each client_id once.
  const pending = {};
  function send(message) {
    const clientId = crypto.randomUUID ? crypto.randomUUID() : String(Date.now()) + Math.random();
    pending[clientId] = message;
    resend(clientId);
  }
  function resend(clientId) {
    if (pending[clientId] === undefined || !socket || socket.readyState !== WebSocket.OPEN) return;
    const frame = Object.assign({ type: "message", client_id: clientId }, pending[clientId]);
    socket.send(JSON.stringify(frame));
  }

  // -- files: attach one of mine, or drop one to upload (tus) and attach it ----------------

  const panel = document.getElementById("attach-panel");
  const attachButton = document.getElementById("attach-button");
  if (panel && attachButton) {
    const fileList = document.getElementById("attach-list");
    const fileInput = document.getElementById("attach-input");
    const uploadBox = document.getElementById("chat-upload");
    const uploadName = document.getElementById("chat-upload-name");
    const uploadBar = document.getElementById("chat-upload-progress");
    const uploadPercent = document.getElementById("chat-upload-percent");
    const csrfMeta = document.querySelector('meta[name="csrf-token"]');

    function attach(fileId) {
      if (!socket || socket.readyState !== WebSocket.OPEN) {
        errorBox.textContent = "Not connected; the file was not posted.";
        return;
      }
      send({ body: input.value.trim(), file: fileId });
      input.value = "";
      panel.hidden = true;
      attachButton.setAttribute("aria-expanded", "false");
    }

    function showFiles() {
      fetch(panel.dataset.listUrl, { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (response) {
          if (!response.ok) throw new Error("HTTP " + response.status);
          return response.json();
        })
        .then(function (data) {
          const items = data.files.map(function (file) {
            const li = document.createElement("li");
            const button = document.createElement("button");
            button.type = "button";
            button.dataset.fileId = file.id;
            button.textContent = file.name + " (" + formatBytes(file.size) + ")";
            button.addEventListener("click", function () { attach(file.id); });
            li.append(button);
            return li;
          });
          if (!items.length) {
            const li = document.createElement("li");
            li.className = "muted";
            li.textContent = "You have no files yet: upload one below or drop it on the room.";
            items.push(li);
          }
          fileList.replaceChildren(...items);
        })
        .catch(function () {
          fileList.textContent = "Your files could not be listed; try again in a moment.";
        });
    }

    attachButton.addEventListener("click", function () {
      panel.hidden = !panel.hidden;
      attachButton.setAttribute("aria-expanded", String(!panel.hidden));
      if (!panel.hidden) showFiles();
    });

    function upload(file) {
      if (typeof tus === "undefined" || !tus.isSupported) {
        errorBox.textContent = "This browser cannot upload files here.";
        return;
      }
      uploadName.textContent = file.name;
      uploadBar.value = 0;
      uploadPercent.textContent = "0%";
      uploadBox.hidden = false;
      const transfer = new tus.Upload(file, {
        endpoint: panel.dataset.uploadUrl,
        chunkSize: 8 * 1024 * 1024,
        retryDelays: [0, 1000, 3000, 5000, 10000],
        metadata: { filename: file.name, filetype: file.type || "application/octet-stream" },
        headers: { "X-CSRFToken": csrfMeta ? csrfMeta.content : "" },
        removeFingerprintOnSuccess: true,
        onProgress: function (sent, total) {
          const share = total ? sent / total : 1;
          uploadBar.value = share;
          uploadPercent.textContent = Math.floor(share * 100) + "%";
        },
        onError: function (error) {
          uploadBox.hidden = true;
          let message = "The upload failed.";
          try {
            message = JSON.parse(error.originalResponse.getBody()).message || message;
          } catch (e) { /* not our JSON: keep the plain message */ }
          errorBox.textContent = message;
        },
        onSuccess: function () {
          uploadBox.hidden = true;
          attach(transfer.url.split("/").pop());
        },
      });
      transfer.start();
    }

    fileInput.addEventListener("change", function () {
      if (fileInput.files.length) upload(fileInput.files[0]);
      fileInput.value = "";
    });
    root.addEventListener("dragover", function (event) {
      if (!event.dataTransfer || !Array.from(event.dataTransfer.types).includes("Files")) return;
      event.preventDefault();
      root.classList.add("dropping");
    });
    root.addEventListener("dragleave", function (event) {
      if (!root.contains(event.relatedTarget)) root.classList.remove("dropping");
    });
    root.addEventListener("drop", function (event) {
      if (!event.dataTransfer || !event.dataTransfer.files.length) return;
      event.preventDefault();
      root.classList.remove("dropping");
      upload(event.dataTransfer.files[0]);
    });
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
