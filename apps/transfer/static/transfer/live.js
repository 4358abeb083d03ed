// The "My files" page's live channel (ws /ws/me, project/live.py): uploads this page did
// not start itself (a CLI push, a script, another tab or machine) get a progress row as
// their bytes arrive, and a file that became whole appears in the list without a reload.
// The page's own uploads show their progress themselves (upload.js): it names each one
// with a "transfer:mine" event, and their events are left to it, even late ones after
// the row is gone (a cancelled upload's last offset). After a drop the socket reconnects
// with backoff and the list is fetched again (what finished meanwhile is in it).
// Names and messages are only ever inserted with textContent, never as HTML.
(function () {
  "use strict";
  const root = document.getElementById("uploader");
  if (!root || !root.dataset.livePath || typeof WebSocket === "undefined") return;
  const list = document.getElementById("uploads");
  const rowTemplate = document.getElementById("upload-row");
  const remote = new Map(); // upload id -> {element, sampleAt, sampleBytes, speed}
  // Uploads that became files or failed. A worker that took an earlier chunk may send its
  // last offset after another sent the file: events of one upload can come out of order.
  const settled = new Set();
  const mine = new Set(); // ids of this page's own uploads (upload.js)
  const STALLED_AFTER = 15000; // ms without news before a row says so
  let attempt = 0; // reconnections since the last open
  let opened = false;

  document.addEventListener("transfer:mine", function (event) {
    mine.add(event.detail);
    const row = remote.get(event.detail); // heard of before this page resumed it
    if (row) {
      clearTimeout(row.stallTimer);
      row.element.remove();
      remote.delete(event.detail);
    }
  });

  function formatBytes(n) {
    const units = ["bytes", "KiB", "MiB", "GiB", "TiB"];
    let unit = 0;
    while (n >= 1024 && unit < units.length - 1) { n /= 1024; unit += 1; }
    return unit ? n.toFixed(1) + " " + units[unit] : Math.round(n) + " " + units[0];
  }

  function part(element, name) { return element.querySelector(".upload-" + name); }

  // An upload this browser started and a reload cut (tus-js-client remembers it in
  // localStorage, under "tus::"): its last offset may arrive after the reload, but it is
  // not news from elsewhere; the list offers to resume it by dropping the file again.
  function startedInThisBrowser(id) {
    try {
      for (let i = 0; i < localStorage.length; i += 1) {
        const key = localStorage.key(i);
        if (!key || !key.startsWith("tus::")) continue;
        const url = (JSON.parse(localStorage.getItem(key)) || {}).uploadUrl || "";
        if (url.split("/").pop() === id) return true;
      }
    } catch (e) { /* no localStorage (private mode): then it is not known here */ }
    return false;
  }

  function ownRowNamed(name) {
    return Array.from(list.querySelectorAll(".upload:not([data-remote])")).some(function (row) {
      return part(row, "name").textContent === name &&
        ["queued", "uploading", "failed", "refused"].includes(row.dataset.state);
    });
  }

  function setState(row, state, status) {
    row.element.dataset.state = state;
    part(row.element, "status").textContent = status;
    const finished = state !== "uploading";
    part(row.element, "cancel").hidden = !finished; // nothing to cancel from here
    if (finished) {
      clearTimeout(row.stallTimer);
      part(row.element, "speed").textContent = "";
      part(row.element, "eta").textContent = "";
    }
  }

  function remoteRow(id, name) {
    let row = remote.get(id);
    if (row) return row;
    const element = rowTemplate.content.firstElementChild.cloneNode(true);
    element.dataset.remote = "";
    element.dataset.uploadId = id;
    part(element, "name").textContent = name;
    part(element, "name").title = name;
    part(element, "bar").querySelector("progress").setAttribute("aria-label", "Upload of " + name);
    part(element, "pause").hidden = true;
    const dismiss = part(element, "cancel");
    dismiss.textContent = "Dismiss";
    dismiss.classList.replace("button-danger", "button-quiet");
    dismiss.addEventListener("click", function () {
      clearTimeout(row.stallTimer);
      element.remove();
      remote.delete(id);
    });
    row = { element: element, sampleAt: null, sampleBytes: 0, speed: null, stallTimer: null };
    remote.set(id, row);
    list.append(element);
    setState(row, "uploading", "arriving from elsewhere…");
    return row;
  }

  function showProgress(row, offset, length) {
    const bar = part(row.element, "bar").querySelector("progress");
    bar.max = length || 1;
    bar.value = length ? offset : 1;
    part(row.element, "percent").textContent =
      (length ? Math.floor((offset / length) * 100) : 100) + "%";
    part(row.element, "bytes").textContent = formatBytes(offset) + " of " + formatBytes(length);
    const now = performance.now();
    if (row.sampleAt !== null && offset > row.sampleBytes && now > row.sampleAt) {
      const rate = ((offset - row.sampleBytes) * 1000) / (now - row.sampleAt);
      row.speed = row.speed === null ? rate : (row.speed + rate) / 2;
      part(row.element, "speed").textContent = formatBytes(row.speed) + "/s";
      part(row.element, "eta").textContent =
        Math.max(1, Math.round((length - offset) / row.speed)) + " s left";
    }
    row.sampleAt = now;
    row.sampleBytes = offset;
    // A sender that stopped (a killed CLI, a closed tab) sends no word: say so after a while.
    clearTimeout(row.stallTimer);
    row.stallTimer = setTimeout(function () {
      if (row.element.dataset.state !== "uploading") return;
      part(row.element, "status").textContent = "no bytes for a while; it resumes when sent again";
      part(row.element, "speed").textContent = "";
      part(row.element, "eta").textContent = "";
      part(row.element, "cancel").hidden = false;
    }, STALLED_AFTER);
  }

  // upload.js fetches the list (and the quota) again and swaps it in.
  function listChanged() {
    document.dispatchEvent(new CustomEvent("transfer:changed"));
  }

  function handle(data) {
    if (data.type === "transfer.progress") {
      if (settled.has(data.upload) || mine.has(data.upload)) return;
      if (!remote.has(data.upload) && startedInThisBrowser(data.upload)) return;
      const row = remoteRow(data.upload, data.name);
      setState(row, "uploading", "arriving from elsewhere…"); // again, after a stall
      showProgress(row, data.offset, data.length);
      if (data.offset === data.length) part(row.element, "status").textContent = "checking…";
    } else if (data.type === "transfer.complete") {
      settled.add(data.file.id);
      const row = remote.get(data.file.id);
      if (row) {
        showProgress(row, data.file.size, data.file.size);
        setState(row, "done", "done");
      }
      listChanged();
    } else if (data.type === "transfer.failed") {
      if (data.upload === null) {
        // Refused before it began: the message starts with the file's name.
        const cut = data.message.indexOf(": ");
        const name = cut > 0 ? data.message.slice(0, cut) : "an upload";
        if (ownRowNamed(name)) return;
        const row = remoteRow("refused-" + Date.now() + "-" + Math.random(), name);
        setState(row, "refused", "refused");
        part(row.element, "message").textContent = cut > 0 ? data.message.slice(cut + 2) : data.message;
        return;
      }
      settled.add(data.upload);
      if (mine.has(data.upload)) return;
      const row = remote.get(data.upload);
      if (row) {
        setState(row, "refused", "failed");
        part(row.element, "message").textContent = data.message;
      }
      listChanged();
    }
  }

  function connect() {
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    const socket = new WebSocket(scheme + location.host + root.dataset.livePath);
    socket.addEventListener("open", function () {
      attempt = 0;
      if (opened) listChanged(); // events sent while we were away are lost: read the list
      opened = true;
    });
    socket.addEventListener("message", function (event) {
      let data;
      try { data = JSON.parse(event.data); } catch (e) { return; }
      if (data && typeof data.type === "string") handle(data);
    });
    socket.addEventListener("close", function (event) {
      if (event.code === 1008) return; // the session ended (session.revoked): nothing to hear
      // Exponential backoff with jitter: 0.5 s, 1 s, 2 s … capped at 30 s.
      const delay = Math.min(30000, 500 * Math.pow(2, attempt)) * (0.5 + Math.random() / 2);
      attempt += 1;
      setTimeout(connect, delay);
    });
  }

  connect();
})();
