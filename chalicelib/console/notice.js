// What the console tells the agent: an API error made readable, a confirmation before a
// decision that cannot be taken back, and a polite announcement of what just happened.

import { h } from "./dom.js";
import { has, label, t } from "./i18n.js";

/** The error envelope of API.md, in words: what failed, why, the rule, each field's problem. */
export function errorBox(error, what) {
  const known = has(`error.${error.code}`);
  const kind = known ? t(`error.${error.code}`) : t("error.other", { status: error.status });
  const status = error.status ? ` (${error.status} ${error.code})` : "";
  return h(
    "div",
    { class: "error-box", role: "alert" },
    h("p", { class: "error-title" }, what ? t("error.failed", { what }) : null, kind, status),
    error.message ? h("p", { class: "error-message" }, error.message) : null,
    error.rule
      ? h("p", { class: "error-rule" }, t("error.rule", { rule: error.rule }), " ", label("rule", error.rule))
      : null,
    error.details.length
      ? h(
          "ul",
          { class: "error-details" },
          error.details.map((detail) =>
            h("li", {}, detail.field ? `${label("field", detail.field)}: ` : "", detail.problem || ""),
          ),
        )
      : null,
    error.requestId ? h("p", { class: "muted small" }, t("error.request_id", { id: error.requestId })) : null,
  );
}

/**
 * Ask before a decision that cannot be undone. Resolves true when the agent confirms.
 * The dialog opens with Cancel focused, so a stray Enter changes nothing.
 */
export function confirmDialog({ title, lines, confirm }) {
  return new Promise((resolve) => {
    const cancelButton = h("button", { type: "button", class: "secondary", autofocus: true }, t("confirm.cancel"));
    const confirmButton = h("button", { type: "button", class: "danger" }, confirm);
    const dialog = h(
      "dialog",
      { class: "confirm", "aria-labelledby": "confirm-title", "aria-describedby": "confirm-body" },
      h("h2", { id: "confirm-title" }, title),
      h("div", { id: "confirm-body" }, lines.filter(Boolean).map((line) => h("p", {}, line))),
      h("div", { class: "dialog-actions" }, cancelButton, confirmButton),
    );
    const close = (answer) => {
      dialog.close();
      dialog.remove();
      resolve(answer);
    };
    cancelButton.addEventListener("click", () => close(false));
    confirmButton.addEventListener("click", () => close(true));
    dialog.addEventListener("cancel", (event) => {
      event.preventDefault();
      close(false);
    });
    document.body.append(dialog);
    dialog.showModal();
    cancelButton.focus();
  });
}

/** A dialog listing the keyboard shortcuts. */
export function shortcutsDialog() {
  const rows = [
    ["j / k", "keys.move"],
    ["Enter", "keys.open"],
    ["[ / ]", "keys.pages"],
    ["c", "keys.claim"],
    ["a", "keys.approve"],
    ["r", "keys.reject"],
    ["i", "keys.request_info"],
    ["e", "keys.return_received"],
    ["p", "keys.retry_payout"],
    ["Esc", "keys.back"],
    ["1 – 4", "keys.tabs"],
    ["?", "keys.help"],
  ];
  const closeButton = h("button", { type: "button", class: "secondary" }, t("keys.close"));
  const dialog = h(
    "dialog",
    { class: "shortcuts", "aria-labelledby": "keys-title" },
    h("h2", { id: "keys-title" }, t("keys.title")),
    h(
      "table",
      {},
      h("caption", { class: "visually-hidden" }, t("keys.title")),
      h("thead", {}, h("tr", {}, h("th", { scope: "col" }, t("keys.key")), h("th", { scope: "col" }, t("keys.does")))),
      h(
        "tbody",
        {},
        rows.map(([key, text]) => h("tr", {}, h("td", {}, h("kbd", {}, key)), h("td", {}, t(text)))),
      ),
    ),
    h("div", { class: "dialog-actions" }, closeButton),
  );
  closeButton.addEventListener("click", () => dialog.close());
  dialog.addEventListener("close", () => dialog.remove());
  document.body.append(dialog);
  dialog.showModal();
  closeButton.focus();
}

let liveRegion = null;

/** The region that announces outcomes (and shows them briefly). */
export function announcer() {
  liveRegion = h("p", { class: "toast", role: "status", "aria-live": "polite" });
  return liveRegion;
}

let toastTimer = null;
export function announce(text) {
  if (!liveRegion) return;
  liveRegion.textContent = text;
  liveRegion.classList.add("shown");
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => liveRegion.classList.remove("shown"), 5000);
}
