// Uploads from the "My files" page, with tus-js-client against our tus 1.0.0
// server (apps/transfer/tus.py). Each file is sent in 8 MiB PATCHes, retried
// with backoff when the connection drops, and remembered in localStorage by
// tus-js-client's fingerprint (name, type, size, modification time), so after a
// reload or a crash dropping the same file again continues where it stopped.
// File names are only ever inserted with textContent, never as HTML.
(function () {
  "use strict";
  const root = document.getElementById("uploader");
  if (!root) return;
  const zone = document.getElementById("dropzone");
  const input = document.getElementById("file-input");
  const list = document.getElementById("uploads");
  const rowTemplate = document.getElementById("upload-row");
  const pageError = document.getElementById("upload-error");

  const CHUNK_SIZE = 8 * 1024 * 1024; // bounds each request the server reads and each retry's loss
  // Backoff between attempts (ms); an upload that moved on since starts again at the first.
  const RETRY_DELAYS = [0, 1000, 3000, 5000, 10000, 20000, 30000, 60000];
  const MAX_ACTIVE = 3; // uploads sending at once; the others wait their turn
  const endpoint = root.dataset.endpoint;
  const maxSize = Number(root.dataset.maxSize);
  const listUrl = root.dataset.listUrl;
  const csrfMeta = document.querySelector('meta[name="csrf-token"]');
  // One object shared by every upload, so a renewed CSRF token reaches them all.
  const headers = { "X-CSRFToken": csrfMeta ? csrfMeta.content : "" };
  let tokenRenewal = null;
  let refreshTimer = null;
  const rows = [];

  // live.js hears of files finished elsewhere (a CLI push, another tab): list them.
  document.addEventListener("transfer:changed", refreshList);

  if (typeof tus === "undefined" || !tus.isSupported) {
    pageError.textContent =
      "This browser cannot upload files here; try a current Firefox, Chrome or Safari.";
    zone.hidden = true;
    return;
  }

  // -- formatting ------------------------------------------------------------------

  function formatBytes(n) {
    const units = ["bytes", "KiB", "MiB", "GiB", "TiB"];
    let unit = 0;
    while (n >= 1024 && unit < units.length - 1) { n /= 1024; unit += 1; }
    return unit ? n.toFixed(1) + " " + units[unit] : Math.round(n) + " " + units[0];
  }

  function formatDuration(seconds) {
    if (seconds < 1) return "under a second";
    if (seconds < 60) return Math.round(seconds) + " s";
    if (seconds < 3600) return Math.floor(seconds / 60) + " min " + Math.round(seconds % 60) + " s";
    return Math.floor(seconds / 3600) + " h " + Math.round((seconds % 3600) / 60) + " min";
  }

  // The server answers errors as JSON {error, status, message}; a proxy may not.
  function responseJson(error) {
    const response = error && error.originalResponse;
    if (!response) return null;
    try { return JSON.parse(response.getBody()); } catch (e) { return null; }
  }

  function statusOf(error) {
    return error && error.originalResponse ? error.originalResponse.getStatus() : 0;
  }

  function describe(error) {
    const status = statusOf(error);
    const body = responseJson(error);
    const detail = body && body.message ? body.message : "";
    if (!status) {
      return "The connection to the server was lost. Press Retry to continue where it stopped.";
    }
    if (status === 401) {
      return "You are no longer logged in. Log in again (in another tab), then press Retry.";
    }
    if (status === 413) {
      return "Not enough room: " + (detail || "the file is larger than this server accepts") + ".";
    }
    if (status === 460) {
      return "The file arrived damaged and was discarded: " + (detail || "checksum mismatch") + ".";
    }
    if (status === 507) return "The server's disk is full. Try again later.";
    if (isCsrfFailure(error)) return detail;
    return "The upload failed (" + status + (body && body.error ? " " + body.error : "") + ")" +
      (detail ? ": " + detail : "") + ".";
  }

  // -- the page around the uploads ----------------------------------------------------

  function fetchPage() {
    return fetch(listUrl, {
      credentials: "same-origin", cache: "no-store", headers: { Accept: "text/html" },
    })
      .then(function (response) {
        if (!response.ok) throw new Error("the file list answered " + response.status);
        return response.text();
      })
      .then(function (html) { return new DOMParser().parseFromString(html, "text/html"); });
  }

  function takeToken(doc) {
    const meta = doc.querySelector('meta[name="csrf-token"]');
    if (meta && meta.content) headers["X-CSRFToken"] = meta.content;
  }

  // One fetch of the page for every upload whose token was refused at once.
  function renewToken() {
    if (!tokenRenewal) {
      tokenRenewal = fetchPage().then(takeToken, function () { /* the restart reports it */ })
        .finally(function () { tokenRenewal = null; });
    }
    return tokenRenewal;
  }

  // The list and the quota come from the server (each file with its SHA-256),
  // swapped in without a reload so uploads still running are not interrupted.
  function refreshList() {
    clearTimeout(refreshTimer);
    refreshTimer = setTimeout(function () {
      fetchPage().then(function (doc) {
        takeToken(doc);
        for (const id of ["files", "quota"]) {
          const fresh = doc.getElementById(id);
          const current = document.getElementById(id);
          if (fresh && current) current.replaceWith(document.adoptNode(fresh));
        }
        markRunning();
      }).catch(function (error) {
        pageError.textContent =
          "Could not refresh the list (" + error.message + "); reload the page.";
      });
    }, 300);
  }

  // An unfinished file that this page is sending says so, instead of "drop it again".
  function markRunning() {
    for (const row of rows) {
      if (!row.upload || !row.upload.url) continue;
      if (!["uploading", "paused", "failed"].includes(row.state)) continue;
      const id = CSS.escape(row.upload.url.split("/").pop());
      const cell = document.querySelector('.file-row[data-file-id="' + id + '"] .file-state');
      if (!cell) continue;
      const badge = document.createElement("span");
      badge.className = "badge";
      badge.textContent = row.state === "uploading" ? "uploading" : row.state;
      const hint = document.createElement("span");
      hint.className = "hint";
      hint.textContent = "— on this page, above";
      cell.replaceChildren(badge, " ", hint);
    }
  }

  // -- one row per upload ---------------------------------------------------------

  function part(row, name) { return row.element.querySelector(".upload-" + name); }

  function setState(row, state, status) {
    row.state = state;
    row.element.dataset.state = state;
    part(row, "status").textContent = status;
    const pause = part(row, "pause");
    const cancel = part(row, "cancel");
    pause.hidden = !row.upload || !["uploading", "paused", "failed"].includes(state);
    pause.textContent = state === "uploading" ? "Pause" : state === "failed" ? "Retry" : "Resume";
    const finished = ["done", "refused", "cancelled"].includes(state);
    cancel.textContent = finished ? "Dismiss" : "Cancel";
    cancel.classList.toggle("button-danger", !finished);
    cancel.classList.toggle("button-quiet", finished);
    if (state !== "uploading") {
      part(row, "speed").textContent = "";
      part(row, "eta").textContent = "";
    }
    markRunning();
  }

  function showMessage(row, text) { part(row, "message").textContent = text; }

  function showProgress(row, sent, total) {
    const bar = part(row, "bar").querySelector("progress");
    bar.max = total || 1;
    bar.value = total ? sent : 1;
    const percent = total ? Math.floor((sent / total) * 100) : 100;
    part(row, "percent").textContent = percent + "%";
    part(row, "bytes").textContent = formatBytes(sent) + " of " + formatBytes(total);
  }

  // Speed is an exponential moving average over samples at least half a second
  // apart (a ~3 s time constant: steady, yet it follows a real change).
  function measure(row, sent, total) {
    const now = performance.now();
    if (row.sampleAt === null || sent < row.sampleBytes) {
      row.sampleAt = now; // first sample, or a retry went back to the server's offset
      row.sampleBytes = sent;
      return;
    }
    const elapsed = now - row.sampleAt;
    if (elapsed < 500) return;
    const rate = ((sent - row.sampleBytes) * 1000) / elapsed;
    const weight = 1 - Math.exp(-elapsed / 3000);
    row.speed = row.speed === null ? rate : row.speed + weight * (rate - row.speed);
    row.sampleAt = now;
    row.sampleBytes = sent;
    part(row, "speed").textContent = formatBytes(row.speed) + "/s";
    part(row, "eta").textContent = row.speed > 0
      ? formatDuration((total - sent) / row.speed) + " left"
      : "stalled";
  }

  function resetSpeed(row) {
    row.sampleAt = null;
    row.sampleBytes = 0;
    row.speed = null;
  }

  function isCsrfFailure(error) {
    const body = responseJson(error);
    return statusOf(error) === 400 && !!body && body.error === "CSRF check failed";
  }

  function shouldRetry(row, error, attempt, options) {
    const status = statusOf(error);
    // As tus-js-client's default: not on a client error, except a conflict over
    // the offset (409) or a chunk still being written (423); never offline.
    const retryable = status < 400 || status === 409 || status === 423 ||
      (status >= 500 && status !== 507); // a full disk does not empty itself in a minute
    const retry = retryable && navigator.onLine !== false;
    if (retry) {
      const seconds = Math.round(options.retryDelays[attempt] / 1000);
      part(row, "status").textContent = (status ? "the server is busy" : "connection lost") +
        "; retrying" + (seconds ? " in " + seconds + " s" : "") + "…";
      resetSpeed(row);
    }
    return retry;
  }

  function activeCount() {
    return rows.filter(function (row) { return row.state === "uploading"; }).length;
  }

  function pump() {
    for (const row of rows) {
      if (activeCount() >= MAX_ACTIVE) return;
      if (row.state === "queued") begin(row);
    }
  }

  // The first start looks for an earlier upload of the same file in this browser.
  function begin(row) {
    setState(row, "uploading", "starting…");
    row.upload.findPreviousUploads().then(function (previous) {
      if (row.state !== "uploading") return; // paused or cancelled meanwhile
      if (previous.length) {
        previous.sort(function (a, b) {
          return Date.parse(b.creationTime) - Date.parse(a.creationTime);
        });
        row.upload.resumeFromPreviousUpload(previous[0]);
        part(row, "status").textContent = "continuing an earlier upload…";
      }
      row.started = true;
      resetSpeed(row);
      row.upload.start();
    }, function () {
      // localStorage unreadable (private mode, quota): upload from the start.
      if (row.state !== "uploading") return;
      row.started = true;
      row.upload.start();
    });
  }

  function pause(row) {
    row.upload.abort();
    setState(row, "paused", "paused");
    pump();
  }

  function resume(row) {
    showMessage(row, "");
    if (!row.started) { begin(row); return; }
    setState(row, "uploading", "uploading…");
    resetSpeed(row);
    row.upload.start();
  }

  function cancel(row) {
    if (["done", "refused", "cancelled"].includes(row.state)) {
      row.element.remove();
      rows.splice(rows.indexOf(row), 1);
      return;
    }
    const sent = Number(part(row, "bar").querySelector("progress").value);
    if (row.started && sent > 0 && !window.confirm("Cancel the upload of " + row.file.name +
        "? What was sent so far is deleted.")) {
      return;
    }
    const wasStarted = row.started;
    setState(row, "cancelled", "cancelling…");
    pump();
    if (!wasStarted) { setState(row, "cancelled", "cancelled"); return; }
    // abort(true) also deletes the upload on the server (tus termination).
    row.upload.abort(true).then(function () {
      setState(row, "cancelled", "cancelled");
      refreshList();
    }, function (error) {
      setState(row, "failed", "not cancelled");
      showMessage(row, describe(error));
    });
  }

  function addRow(file) {
    const element = rowTemplate.content.firstElementChild.cloneNode(true);
    const row = {
      file: file, element: element, upload: null, state: "queued", started: false,
      key: [file.name, file.size, file.lastModified].join("/"),
    };
    resetSpeed(row);
    part(row, "name").textContent = file.name;
    part(row, "name").title = file.name;
    part(row, "bar").querySelector("progress").setAttribute("aria-label", "Upload of " + file.name);
    showProgress(row, 0, file.size);
    part(row, "pause").addEventListener("click", function () {
      if (row.state === "uploading") pause(row); else resume(row);
    });
    part(row, "cancel").addEventListener("click", function () { cancel(row); });
    list.append(element);
    rows.push(row);
    return row;
  }

  function makeUpload(row) {
    const file = row.file;
    const metadata = { filename: file.name };
    if (file.type) metadata.filetype = file.type;
    return new tus.Upload(file, {
      endpoint: endpoint,
      chunkSize: CHUNK_SIZE,
      retryDelays: RETRY_DELAYS,
      headers: headers,
      metadata: metadata,
      removeFingerprintOnSuccess: true,
      // Tells live.js the upload is this page's: its events are left to this row.
      onUploadUrlAvailable: function () {
        const id = row.upload.url.split("/").pop();
        row.element.dataset.uploadId = id;
        document.dispatchEvent(new CustomEvent("transfer:mine", { detail: id }));
      },
      onShouldRetry: function (error, attempt, options) {
        return shouldRetry(row, error, attempt, options);
      },
      onProgress: function (sent, total) {
        if (row.state !== "uploading") return;
        row.renewedToken = false;
        showProgress(row, sent, total);
        part(row, "status").textContent = sent === total ? "checking…" : "uploading…";
        measure(row, sent, total);
      },
      onSuccess: function () {
        showProgress(row, file.size, file.size);
        setState(row, "done", "done");
        showMessage(row, "");
        refreshList();
        pump();
      },
      onError: function (error) {
        if (row.state === "cancelled") return;
        // A refused token (older than WTF_CSRF_TIME_LIMIT) is renewed once, then the
        // upload restarts: each request copies `headers` when it is made.
        if (isCsrfFailure(error) && !row.renewedToken) {
          row.renewedToken = true;
          part(row, "status").textContent = "renewing the security token…";
          renewToken().then(function () { if (row.state === "uploading") row.upload.start(); });
          return;
        }
        setState(row, "failed", "stopped");
        showMessage(row, describe(error));
        row.offline = !statusOf(error);
        if (statusOf(error) === 460) refreshList(); // the server deleted the upload
        pump();
      },
    });
  }

  function addFiles(files) {
    pageError.textContent = "";
    for (const file of files) {
      // The same file again: a stopped row goes on, a running one is left alone.
      const same = rows.find(function (row) {
        return row.upload && row.key === [file.name, file.size, file.lastModified].join("/") &&
          ["queued", "uploading", "paused", "failed"].includes(row.state);
      });
      if (same) {
        if (same.state === "paused" || same.state === "failed") resume(same);
        else showMessage(same, "This file is already on its way.");
        continue;
      }
      const row = addRow(file);
      if (file.size > maxSize) {
        setState(row, "refused", "not sent");
        showMessage(row, "This file is " + formatBytes(file.size) + "; files may be at most " +
          formatBytes(maxSize) + ".");
        continue;
      }
      row.upload = makeUpload(row);
      setState(row, "queued", "waiting…");
    }
    pump();
  }

  // -- choosing and dropping files --------------------------------------------------

  input.addEventListener("change", function () {
    addFiles(Array.from(input.files));
    input.value = ""; // so choosing the same file again (to resume it) fires "change"
  });

  // The whole page takes a drop, so a near miss does not open the file in the tab.
  let dragDepth = 0;
  function carriesFiles(event) {
    return event.dataTransfer && Array.from(event.dataTransfer.types).includes("Files");
  }
  window.addEventListener("dragenter", function (event) {
    if (!carriesFiles(event)) return;
    dragDepth += 1;
    zone.classList.add("dropzone-active");
  });
  window.addEventListener("dragleave", function (event) {
    if (!carriesFiles(event)) return;
    dragDepth = Math.max(0, dragDepth - 1);
    if (!dragDepth) zone.classList.remove("dropzone-active");
  });
  window.addEventListener("dragover", function (event) {
    if (!carriesFiles(event)) return;
    event.preventDefault();
    event.dataTransfer.dropEffect = "copy";
  });
  window.addEventListener("drop", function (event) {
    if (!carriesFiles(event)) return;
    event.preventDefault();
    dragDepth = 0;
    zone.classList.remove("dropzone-active");
    const files = [];
    const folders = [];
    const items = Array.from(event.dataTransfer.items || []);
    Array.from(event.dataTransfer.files).forEach(function (file, i) {
      const entry = items[i] && items[i].webkitGetAsEntry ? items[i].webkitGetAsEntry() : null;
      if (entry && entry.isDirectory) folders.push(file.name); else files.push(file);
    });
    addFiles(files);
    if (folders.length) {
      pageError.textContent =
        "Folders cannot be uploaded (" + folders.join(", ") + "); zip them first.";
    }
  });

  // -- leaving and losing the network --------------------------------------------------

  window.addEventListener("beforeunload", function (event) {
    if (!activeCount()) return;
    event.preventDefault(); // the browser asks first; the upload could resume later anyway
    event.returnValue = "";
  });
  window.addEventListener("online", function () {
    for (const row of rows) {
      if (row.state === "failed" && row.offline) resume(row);
    }
  });
})();
