// The customer-service console: sign-in, the workspace (queue and refund side by side),
// analytics, reconciliation and order corrections; keyboard first.

import { Api } from "./api.js";
import {
  currentSession,
  finishHostedSignIn,
  hostedSignOut,
  signInWithToken,
  signOut,
  startHostedSignIn,
} from "./auth.js";
import { fill, h } from "./dom.js";
import { language, setLanguage, t } from "./i18n.js";
import { announce, announcer, errorBox, shortcutsDialog } from "./notice.js";
import { OrderCorrectionView } from "./orders.js";
import { QueueView } from "./queue.js";
import { RefundView } from "./refund.js";
import { ReconciliationView, StatsView } from "./stats.js";

const root = document.getElementById("app");
const TABS = ["queue", "stats", "reconciliation", "orders"];

const state = {
  config: null,
  session: null,
  signInProblem: null,
  tab: "queue",
  views: null,
};

const toast = announcer();
const api = new Api(document.documentElement.dataset.api || "", () => state.session?.token, expired);

/** The place in the console, kept in the URL's fragment so a reload comes back to it. */
function readPlace() {
  const place = new URLSearchParams(location.hash.slice(1));
  return {
    tab: TABS.includes(place.get("tab")) ? place.get("tab") : "queue",
    status: place.get("status"),
    refund: place.get("refund"),
  };
}

function writePlace() {
  const views = state.views;
  if (!views) return;
  const place = new URLSearchParams({ tab: state.tab, status: views.queue.status });
  if (views.refund.id) place.set("refund", views.refund.id);
  history.replaceState(null, "", `#${place}`);
}

function expired() {
  signOut();
  stopViews();
  state.session = null;
  state.signInProblem = { key: "expired_session" };
  render();
}

function stopViews() {
  if (state.views) state.views.queue.stop();
  state.views = null;
}

function availableTabs() {
  return TABS.filter((tab) => tab !== "reconciliation" || state.session.senior);
}

function buildViews(place) {
  const refund = new RefundView({
    api,
    session: state.session,
    ruleIds: state.config.rule_ids,
    onChanged: () => queue.load(),
  });
  const queue = new QueueView({
    api,
    session: state.session,
    initial: place,
    onOpen: (id) => {
      refund.open(id);
      writePlace();
    },
    onRefreshed: () => {
      refund.refresh();
      writePlace();
    },
  });
  state.views = {
    queue,
    refund,
    stats: new StatsView({ api }),
    reconciliation: new ReconciliationView({ api }),
    orders: new OrderCorrectionView({ api }),
  };
  queue.start();
  if (place.refund) refund.open(place.refund);
}

function switchTab(tab) {
  if (!availableTabs().includes(tab)) return;
  state.tab = tab;
  render();
  writePlace();
  const heading = root.querySelector("main h2");
  if (heading) {
    heading.setAttribute("tabindex", "-1");
    heading.focus();
  }
}

// ---------------------------------------------------------------------- sign-in

function signInView() {
  const config = state.config;
  const problem = state.signInProblem
    ? h("p", { class: "error-box", role: "alert" }, t(`signin.problem.${state.signInProblem.key}`), state.signInProblem.detail ? ` (${state.signInProblem.detail})` : "")
    : null;
  let body;
  if (config.sign_in === "token") {
    const field = h("textarea", { id: "token", rows: 5, autocomplete: "off", spellcheck: "false", "aria-describedby": "token-hint" });
    body = h(
      "form",
      {
        class: "signin-form",
        novalidate: true,
        onsubmit: (event) => {
          event.preventDefault();
          const reason = signInWithToken(field.value);
          if (reason) {
            state.signInProblem = { key: reason };
            render();
            root.querySelector("#token").focus();
            return;
          }
          start();
        },
      },
      h("label", { for: "token" }, t("signin.token")),
      field,
      h("p", { id: "token-hint", class: "hint" }, t("signin.token_hint")),
      h("button", { type: "submit", class: "primary" }, t("signin.submit")),
    );
  } else if (config.sign_in === "cognito") {
    body = h(
      "div",
      {},
      h("p", {}, t("signin.cognito_about")),
      h("button", { type: "button", class: "primary", onclick: () => startHostedSignIn(config.cognito) }, t("signin.cognito")),
    );
  } else {
    body = h("p", { class: "notice" }, t("signin.unconfigured", { stage: config.stage }));
  }
  return h(
    "main",
    { class: "signin" },
    h("section", { class: "card signin-card", "aria-labelledby": "signin-title" }, h("h2", { id: "signin-title" }, t("signin.title")), problem, body),
  );
}

// ---------------------------------------------------------------------- shell

function languageSwitch() {
  return h(
    "div",
    { class: "language" },
    h("label", { for: "language", class: "visually-hidden" }, t("app.language")),
    h(
      "select",
      {
        id: "language",
        onchange: (event) => {
          setLanguage(event.target.value);
          render();
          root.querySelector("#language").focus();
        },
      },
      h("option", { value: "zh", selected: language() === "zh", lang: "zh-CN" }, "中文"),
      h("option", { value: "en", selected: language() === "en", lang: "en" }, "English"),
    ),
  );
}

function header() {
  const session = state.session;
  return h(
    "header",
    { class: "topbar" },
    h("h1", {}, h("img", { src: document.querySelector("link[rel=icon]").href, alt: "", width: 22, height: 22 }), t("app.title")),
    session
      ? h(
          "nav",
          { class: "tabs", "aria-label": t("app.sections") },
          availableTabs().map((tab, index) =>
            h(
              "button",
              {
                type: "button",
                class: "tab",
                "aria-current": state.tab === tab ? "page" : null,
                "aria-keyshortcuts": String(index + 1),
                onclick: () => switchTab(tab),
              },
              t(`tab.${tab}`),
              " ",
              h("kbd", { "aria-hidden": "true" }, String(index + 1)),
            ),
          ),
        )
      : null,
    h(
      "div",
      { class: "who" },
      session
        ? [
            h("span", { class: "user" }, session.sub, " · ", t(session.senior ? "role.senior" : "role.agent")),
            h("button", { type: "button", class: "link", onclick: () => shortcutsDialog() }, t("keys.title")),
            h(
              "button",
              {
                type: "button",
                class: "secondary",
                onclick: () => {
                  signOut();
                  stopViews();
                  state.session = null;
                  state.signInProblem = null;
                  if (state.config.sign_in === "cognito") hostedSignOut(state.config.cognito);
                  else render();
                },
              },
              t("app.sign_out"),
            ),
          ]
        : null,
      languageSwitch(),
    ),
  );
}

function workspace() {
  const views = state.views;
  const view = views[state.tab];
  if (state.tab === "queue") {
    views.queue.render();
    views.refund.render();
    return h("main", { class: "workspace" }, views.queue.element, views.refund.element);
  }
  view.start();
  return h("main", { class: "single" }, view.element);
}

function render() {
  if (!state.config) return;
  fill(root, header(), state.session ? workspace() : signInView(), toast);
}

function fatal(error) {
  fill(root, h("main", { class: "signin" }, h("h1", {}, t("app.title")), errorBox(error, t("app.loading_config"))));
}

// ---------------------------------------------------------------------- keyboard

function typing(target) {
  return target instanceof HTMLElement && (target.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(target.tagName));
}

function onKey(event) {
  if (!state.views || event.ctrlKey || event.metaKey || event.altKey || document.querySelector("dialog[open]")) return;
  if (event.key === "Escape") {
    if (typing(event.target)) event.target.blur();
    else if (state.tab === "queue") state.views.queue.focusSelected();
    return;
  }
  if (typing(event.target)) return;
  const key = event.key;
  const tabs = availableTabs();
  let handled = true;
  if (key === "?") shortcutsDialog();
  else if (/^[1-4]$/.test(key) && Number(key) <= tabs.length) switchTab(tabs[Number(key) - 1]);
  else if (state.tab !== "queue") handled = false;
  else if (key === "j") state.views.queue.move(1);
  else if (key === "k") state.views.queue.move(-1);
  else if (key === "Enter" && !(event.target instanceof HTMLButtonElement || event.target instanceof HTMLAnchorElement)) state.views.queue.openSelected();
  else if (key === "]") state.views.queue.nextPage();
  else if (key === "[") state.views.queue.previousPage();
  else handled = state.views.refund.shortcut(key);
  if (handled) event.preventDefault();
}

// ---------------------------------------------------------------------- start

function start() {
  state.session = currentSession();
  if (!state.session) {
    render();
    return;
  }
  state.signInProblem = null;
  const place = readPlace();
  state.tab = availableTabs().includes(place.tab) ? place.tab : "queue";
  buildViews(place);
  render();
  announce(t("app.signed_in", { who: state.session.sub }));
}

async function main() {
  setLanguage(language());
  try {
    state.config = await api.config();
  } catch (error) {
    fatal(error);
    return;
  }
  if (state.config.sign_in === "cognito") {
    const back = await finishHostedSignIn(state.config.cognito);
    if (back.returned && back.problem) state.signInProblem = { key: back.problem, detail: back.detail };
  }
  document.addEventListener("keydown", onKey);
  start();
}

main();
