// What both file pages do: ask before a [data-confirm] form is sent, and copy
// text (a SHA-256, a share link) for [data-copy] buttons. Delegated from the
// document, so a file list swapped in by upload.js works the same.
(function () {
  "use strict";

  document.addEventListener("submit", function (event) {
    const asking = event.target.closest("[data-confirm]");
    if (asking && !window.confirm(asking.dataset.confirm)) event.preventDefault();
  });

  function selectText(element) {
    if (element instanceof HTMLInputElement) {
      element.focus();
      element.select();
      return;
    }
    const range = document.createRange();
    range.selectNodeContents(element);
    const selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
  }

  // The Clipboard API exists only in secure contexts (https, localhost); over
  // plain http the text is selected and copied the old way.
  function copy(element) {
    const text = element instanceof HTMLInputElement ? element.value : element.textContent.trim();
    if (navigator.clipboard && window.isSecureContext) {
      return navigator.clipboard.writeText(text).then(function () { return true; }, function () {
        selectText(element);
        return document.execCommand("copy");
      });
    }
    selectText(element);
    return Promise.resolve(document.execCommand("copy"));
  }

  document.addEventListener("click", function (event) {
    const button = event.target.closest("button[data-copy]");
    if (!button) return;
    const source = document.querySelector(button.dataset.copy);
    if (!source) return;
    const label = button.dataset.label || button.textContent;
    button.dataset.label = label;
    copy(source).then(function (copied) {
      button.textContent = copied ? "Copied" : "Press Ctrl+C";
      setTimeout(function () { button.textContent = label; }, 2000);
    });
  });
})();
