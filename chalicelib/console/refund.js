// One refund as an agent works it: the order as it was, the evidence, the history, the
// workflow's steps and the messages; every decision of the API with its checks shown beside
// its fields; decisions that cannot be taken back are confirmed first.

import { field, fill, h, rebuildKeeping } from "./dom.js";
import { bytes, money, parseYuan, percent, shortTime, time, yuanText } from "./format.js";
import { label, language, t } from "./i18n.js";
import { announce, confirmDialog, errorBox } from "./notice.js";
import { dueOf, dueText, escalationBadge } from "./queue.js";

const TERMINAL = ["paid", "cancelled", "closed", "rejected"];
/** Where approve, reject and request-info apply (API.md, transitions). */
const DECIDING = ["pending_review", "appealed"];
/** Statuses the workflow moves on by itself: the page looks again until they change. */
const MOVING = ["submitted", "approved", "paying"];
/** Quality reasons (POLICY PH1): goods may come back opened. */
const QUALITY_REASONS = ["not_as_described", "defective", "invalid_code", "wrong_item_issued"];
const POLL_MS = 2000;
/** Download URLs live at most 5 minutes; previews are signed again before that. */
const EVIDENCE_FRESH_MS = 4 * 60 * 1000;
const MAX_TEXT = 2000;

/** Whether two reads show the same refund (download URLs are signed anew on every read). */
function sameRefund(a, b) {
  const unsigned = (refund) => JSON.stringify({ ...refund, evidence: refund.evidence.map((item) => ({ ...item, download_url: null })) });
  return unsigned(a) === unsigned(b);
}

function kbd(key) {
  return h("kbd", { "aria-hidden": "true" }, key);
}

function fact(name, value) {
  return h("div", { class: "fact" }, h("dt", {}, name), h("dd", {}, value));
}

export class RefundView {
  constructor({ api, session, ruleIds, onChanged }) {
    this.api = api;
    this.session = session;
    this.ruleIds = ruleIds;
    this.onChanged = onChanged;
    this.id = null;
    this.refund = null;
    this.loadError = null;
    this.errors = {};
    this.invalid = {};
    this.busy = null;
    this.evidence = null;
    this.pollTimer = null;
    this.reads = 0;
    this.element = h("section", { class: "refund panel", "aria-labelledby": "refund-title" });
    this.render();
  }

  // ------------------------------------------------------------------ loading

  async open(id) {
    clearTimeout(this.pollTimer);
    this.id = id;
    this.refund = null;
    this.loadError = null;
    this.errors = {};
    this.invalid = {};
    this.evidence = null;
    this.render();
    await this.load();
    this.focusTitle();
  }

  /** Read the open refund again; an answer overtaken by a later read or a decision (or
   * for a refund no longer open) is dropped. */
  async load() {
    const id = this.id;
    if (!id) return;
    clearTimeout(this.pollTimer);
    const asked = ++this.reads;
    let refund = null;
    let error = null;
    try {
      refund = await this.api.refund(id);
    } catch (failure) {
      error = failure;
    }
    if (asked !== this.reads || id !== this.id) return;
    const unchanged = refund && this.refund && sameRefund(refund, this.refund) && !error && !this.loadError;
    if (refund) this.refund = refund;
    this.loadError = error;
    if (unchanged && this.evidence && Date.now() - this.evidence.at < EVIDENCE_FRESH_MS) {
      // Nothing moved: leave the page (and the agent's focus in it) as it is.
      this.schedulePoll();
      return;
    }
    this.render();
    this.schedulePoll();
  }

  schedulePoll() {
    clearTimeout(this.pollTimer);
    if (this.refund && MOVING.includes(this.refund.status) && !this.busy) {
      this.pollTimer = setTimeout(() => this.load(), POLL_MS);
    }
  }

  /** The queue was refreshed: look at the open refund again (one read), unless busy. */
  refresh() {
    if (this.refund && !this.busy) this.load();
  }

  focusTitle() {
    const title = this.element.querySelector("#refund-title");
    if (title) title.focus();
  }

  // ------------------------------------------------------------------ keyboard

  mine() {
    return this.refund !== null && this.refund.assignee === this.session.sub;
  }

  /** A decision's key: claim at once; otherwise bring its form's first field into focus. */
  shortcut(key) {
    if (!this.refund || this.busy) return false;
    const targets = { a: "approve-amount", r: "reject-rule", i: "reply-body", e: "return-intact-yes", p: "retry-original" };
    if (key === "c") {
      const button = this.element.querySelector("#claim-button");
      if (button) button.click();
      else announce(t("decide.cannot_claim"));
      return true;
    }
    const target = targets[key];
    if (!target) return false;
    const field = this.element.querySelector(`#${target}`);
    if (field && !field.disabled) {
      field.focus();
      field.scrollIntoView({ block: "nearest" });
    } else {
      announce(this.mine() ? t("decide.not_now") : t("decide.claim_first"));
    }
    return true;
  }

  // ------------------------------------------------------------------ decisions

  value(id) {
    const field = this.element.querySelector(`#${id}`);
    return field ? field.value : "";
  }

  checked(id) {
    const field = this.element.querySelector(`#${id}`);
    return Boolean(field && field.checked);
  }

  /** What a decision sends and how it is confirmed; null when a field is not valid. */
  plan(action) {
    const r = this.refund;
    const invalid = {};
    let body;
    let confirm = null;
    if (action === "claim") {
      if (r.assignee && r.assignee !== this.session.sub) {
        confirm = {
          title: t("confirm.takeover.title"),
          lines: [t("confirm.takeover.body", { who: r.assignee, id: r.refund_id })],
          confirm: t("confirm.takeover.ok"),
        };
      }
    } else if (action === "approve") {
      const amount = parseYuan(this.value("approve-amount"));
      const note = this.value("approve-note").trim();
      if (amount === null) invalid["approve-amount"] = t("approve.amount_invalid");
      else if (amount > r.amount) invalid["approve-amount"] = t("approve.amount_too_high", { max: money(r.amount) });
      else if (amount === 0) invalid["approve-amount"] = t("approve.amount_zero");
      else if (amount < r.amount && !note) invalid["approve-note"] = t("approve.note_required", { max: money(r.amount) });
      body = note ? { amount, note } : { amount };
      confirm = {
        title: t("confirm.approve.title"),
        lines: [
          t("confirm.approve.body", { amount: money(amount), user: r.user_id, channel: label("channel", r.channel) }),
          amount < r.amount ? t("confirm.approve.lower", { max: money(r.amount) }) : null,
          r.needs_return ? t("confirm.approve.return") : t("confirm.approve.final"),
        ],
        confirm: t("confirm.approve.ok", { amount: money(amount) }),
      };
    } else if (action === "reject") {
      const rule = this.value("reject-rule");
      const message = this.value("reject-message").trim();
      if (!rule) invalid["reject-rule"] = t("reject.rule_required");
      if (!message) invalid["reject-message"] = t("reject.message_required");
      body = { rule, message };
      confirm = {
        title: t("confirm.reject.title"),
        lines: [
          t("confirm.reject.body", { rule, text: label("rule", rule) }),
          r.status === "appealed" ? t("confirm.reject.final") : t("confirm.reject.appeal"),
        ],
        confirm: t("confirm.reject.ok"),
      };
    } else if (action === "request-info") {
      const message = this.value("reply-body").trim();
      if (!message) invalid["reply-body"] = t("reply.required");
      body = { message };
    } else if (action === "return-received") {
      const yes = this.checked("return-intact-yes");
      const no = this.checked("return-intact-no");
      const hasGifts = r.order.gifts.length > 0;
      const gifts = !hasGifts || this.checked("return-gifts");
      if (!yes && !no) invalid["return-intact-yes"] = t("return.intact_required");
      body = { intact: yes, gifts_returned: gifts };
      const refused = no && !QUALITY_REASONS.includes(r.reason);
      confirm = {
        title: t("confirm.return.title"),
        lines: [
          t(yes ? "confirm.return.intact" : "confirm.return.damaged"),
          hasGifts ? t(gifts ? "confirm.return.gifts" : "confirm.return.no_gifts") : null,
          refused ? t("confirm.return.rejects") : t("confirm.return.pays"),
        ],
        confirm: t("confirm.return.ok"),
      };
    } else if (action === "retry-payout") {
      const channel = this.checked("retry-balance") ? "balance" : "original";
      body = { payout_channel: channel };
      confirm = {
        title: t("confirm.retry.title"),
        lines: [t("confirm.retry.body", { amount: money(r.approved_amount), channel: label("payout", channel) })],
        confirm: t("confirm.retry.ok"),
      };
    }
    this.invalid = invalid;
    return Object.keys(invalid).length ? null : { body, confirm };
  }

  async decide(action) {
    if (!this.refund || this.busy) return;
    const plan = this.plan(action);
    if (!plan) {
      this.render();
      const first = this.element.querySelector("[aria-invalid='true']");
      if (first) first.focus();
      return;
    }
    if (plan.confirm && !(await confirmDialog(plan.confirm))) return;
    const id = this.refund.refund_id;
    this.reads += 1; // what a read in flight brings back is older than this decision's answer
    this.busy = action;
    delete this.errors[action];
    this.render();
    let done = false;
    try {
      this.refund = await this.api.decide(id, action, plan.body);
      this.errors = {};
      done = true;
      // The decision is made: what was typed for it is spent.
      for (const field of this.element.querySelectorAll("form input, form textarea, form select")) {
        field.dataset.fresh = "";
      }
      announce(t(`done.${action}`, { id }));
    } catch (error) {
      this.errors[action] = error;
    } finally {
      this.busy = null;
    }
    this.render();
    if (done) {
      this.focusTitle();
      this.onChanged(this.refund);
      this.schedulePoll();
    } else {
      const button = this.element.querySelector(action === "claim" ? "#claim-button" : `#${action}-submit`);
      if (button) button.focus();
      // A conflict or a role check means the refund changed meanwhile: show it as it is now.
      if ([403, 409].includes(this.errors[action].status)) {
        this.load();
        this.onChanged(this.refund);
      }
    }
  }

  clearInvalidIn(form) {
    for (const id of Object.keys(this.invalid)) {
      const field = form.querySelector(`#${id}`);
      if (!field) continue;
      delete this.invalid[id];
      field.removeAttribute("aria-invalid");
      const described = (field.getAttribute("aria-describedby") || "").split(" ").filter((ref) => ref !== `${id}-error`);
      if (described.length) field.setAttribute("aria-describedby", described.join(" "));
      else field.removeAttribute("aria-describedby");
      form.querySelector(`#${id}-error`)?.remove();
    }
  }

  field(id, text, control, hint) {
    return field(id, text, control, hint, this.invalid[id]);
  }


  form(action, { legend, key, enabled, why, fields, submit, tone }) {
    return h(
      "form",
      {
        id: `${action}-form`,
        class: "decision",
        novalidate: true,
        onsubmit: (event) => {
          event.preventDefault();
          this.decide(action);
        },
        // A field changed: what was said about this form's fields no longer holds (a lower
        // amount's missing reason, once the amount is the computed one again).
        oninput: (event) => this.clearInvalidIn(event.currentTarget),
        onchange: (event) => this.clearInvalidIn(event.currentTarget),
      },
      h(
        "fieldset",
        { disabled: !enabled || this.busy !== null },
        h("legend", {}, legend, " ", kbd(key)),
        enabled || !why ? null : h("p", { class: "hint" }, why),
        fields,
        h(
          "div",
          { class: "form-actions" },
          h(
            "button",
            { type: "submit", id: `${action}-submit`, class: tone, "aria-keyshortcuts": key.toLowerCase() },
            this.busy === action ? t("decide.sending") : submit,
          ),
        ),
      ),
      this.errors[action] ? errorBox(this.errors[action], legend) : null,
    );
  }

  /** Why a decision's form is disabled, unless the claim line above already says it. */
  whyNot(r) {
    const claimLineSays = (r.status === "appealed" && !this.session.senior) || (r.assignee && !this.mine() && !this.session.senior);
    return claimLineSays ? null : t("decide.claim_first");
  }


  claimBlock(r) {
    const error = this.errors.claim ? errorBox(this.errors.claim, t("decide.claim")) : null;
    if (TERMINAL.includes(r.status) || r.status === "draft") return error;
    if (r.status === "appealed" && !this.session.senior) {
      return [h("p", { class: "notice" }, t("decide.senior_only")), error];
    }
    if (this.mine()) return [h("p", { class: "claim-line mine" }, t("decide.claimed_by_you")), error];
    const holder = r.assignee;
    if (holder && !this.session.senior) {
      return [h("p", { class: "notice" }, t("decide.claimed_by_other", { who: holder })), error];
    }
    return [
      h(
        "div",
        { class: "claim-line" },
        h(
          "button",
          {
            type: "button",
            id: "claim-button",
            class: holder ? "danger" : "primary",
            "aria-keyshortcuts": "c",
            disabled: this.busy !== null,
            onclick: () => this.decide("claim"),
          },
          this.busy === "claim" ? t("decide.sending") : holder ? t("decide.takeover", { who: holder }) : t("decide.claim"),
          " ",
          kbd("C"),
        ),
        h("span", { class: "muted small" }, holder ? t("decide.takeover_hint") : t("decide.claim_hint")),
      ),
      error,
    ];
  }

  approveForm(r, enabled) {
    const amount = h("input", {
      id: "approve-amount",
      type: "text",
      inputmode: "decimal",
      autocomplete: "off",
      value: yuanText(r.amount),
    });
    const note = h("textarea", { id: "approve-note", rows: 2, maxlength: MAX_TEXT });
    return this.form("approve", {
      legend: t("approve.legend"),
      key: "A",
      enabled,
      why: this.whyNot(r),
      tone: "primary",
      submit: t("approve.submit"),
      fields: [
        this.field("approve-amount", t("approve.amount"), amount, t("approve.amount_hint", { max: money(r.amount) })),
        this.field("approve-note", t("approve.note"), note, t("approve.note_hint")),
      ],
    });
  }

  rejectForm(r, enabled) {
    const known = this.ruleIds;
    const rule = h(
      "select",
      { id: "reject-rule" },
      h("option", { value: "" }, t("reject.choose")),
      known.map((id) => h("option", { value: id }, `${id} · ${label("rule", id)}`)),
    );
    const message = h("textarea", { id: "reject-message", rows: 3, maxlength: MAX_TEXT });
    return this.form("reject", {
      legend: t("reject.legend"),
      key: "R",
      enabled,
      why: this.whyNot(r),
      tone: "danger",
      submit: t("reject.submit"),
      fields: [
        this.field("reject-rule", t("reject.rule"), rule, t("reject.rule_hint")),
        this.field("reject-message", t("reject.message"), message, t("reject.message_hint")),
      ],
    });
  }

  returnForm(r, enabled) {
    const radio = (id, value, text) =>
      h("label", { class: "check", for: id }, h("input", { type: "radio", id, name: "return-intact", value }), text);
    const intactError = this.invalid["return-intact-yes"];
    const yes = radio("return-intact-yes", "yes", t("return.intact_yes"));
    const no = radio("return-intact-no", "no", t("return.intact_no"));
    if (intactError) {
      for (const option of [yes, no]) option.querySelector("input").setAttribute("aria-describedby", "return-intact-yes-error");
      yes.querySelector("input").setAttribute("aria-invalid", "true");
    }
    const gifts = r.order.gifts.length
      ? h("label", { class: "check", for: "return-gifts" }, h("input", { type: "checkbox", id: "return-gifts", checked: true }), t("return.gifts"))
      : null;
    return this.form("return-received", {
      legend: t("return.legend"),
      key: "E",
      enabled,
      why: this.whyNot(r),
      tone: "primary",
      submit: t("return.submit"),
      fields: [
        h(
          "fieldset",
          { class: "choice" },
          h("legend", {}, t("return.intact")),
          yes,
          no,
          intactError ? h("p", { id: "return-intact-yes-error", class: "field-error" }, intactError) : null,
          h("p", { class: "hint" }, QUALITY_REASONS.includes(r.reason) ? t("return.quality_hint") : t("return.ph1_hint")),
        ),
        gifts,
      ],
    });
  }

  retryForm(r, enabled) {
    const radio = (id, value, text, checked) =>
      h("label", { class: "check", for: id }, h("input", { type: "radio", id, name: "retry-channel", value, checked }), text);
    return this.form("retry-payout", {
      legend: t("retry.legend"),
      key: "P",
      enabled,
      why: this.whyNot(r),
      tone: "primary",
      submit: t("retry.submit"),
      fields: [
        h(
          "fieldset",
          { class: "choice" },
          h("legend", {}, t("retry.channel")),
          radio("retry-original", "original", t("retry.original", { channel: label("channel", r.order.payment_channel) }), r.payout_channel !== "balance"),
          radio("retry-balance", "balance", t("retry.balance"), r.payout_channel === "balance"),
        ),
      ],
    });
  }

  decisions(r) {
    const mine = this.mine();
    const parts = [h("h3", { id: "decide-title" }, t("decide.title")), this.claimBlock(r)];
    if (DECIDING.includes(r.status)) {
      parts.push(
        this.approveForm(r, mine),
        this.rejectForm(r, mine),
        h(
          "p",
          { class: "hint" },
          t("decide.request_info_hint"),
          " ",
          h(
            "button",
            { type: "button", id: "request-info-jump", class: "link", "aria-keyshortcuts": "i", onclick: () => this.shortcut("i") },
            t("decide.request_info"),
            " ",
            kbd("I"),
          ),
        ),
      );
    } else if (r.status === "awaiting_return") {
      parts.push(this.returnForm(r, mine));
    } else if (r.status === "payout_failed") {
      parts.push(this.retryForm(r, mine));
    } else {
      parts.push(h("p", { class: "muted" }, t(`decide.none.${r.status}`)));
    }
    return h("section", { class: "decisions card", "aria-labelledby": "decide-title" }, parts);
  }

  // ------------------------------------------------------------------ what the refund holds

  application(r) {
    return h(
      "section",
      { class: "card", "aria-labelledby": "application-title" },
      h("h3", { id: "application-title" }, t("application.title")),
      h(
        "dl",
        { class: "facts" },
        fact(t("application.reason"), label("reason", r.reason)),
        fact(t("application.payout"), `${label("payout", r.payout_channel)} · ${label("channel", r.channel)}`),
        fact(t("application.needs_return"), t(r.needs_return ? "yes" : "no")),
        fact(t("application.fast_track"), t(r.fast_track ? "yes" : "no")),
      ),
      h("p", { class: "description" }, r.description),
    );
  }

  order(o) {
    const usage = o.usage ? t("order.usage_value", { used: o.usage.used_units, total: o.usage.total_units }) : "—";
    return h(
      "section",
      { class: "card", "aria-labelledby": "order-title" },
      h("h3", { id: "order-title" }, t("order.title")),
      h(
        "dl",
        { class: "facts two" },
        fact(t("order.id"), o.order_id),
        fact(t("order.product"), o.title ? `${o.title} (${o.sku})` : o.sku),
        fact(t("order.kind"), `${label("kind", o.kind)} · ${o.category}`),
        fact(t("order.status"), label("order_status", o.status)),
        fact(t("order.list_price"), money(o.list_price)),
        fact(t("order.paid"), money(o.paid_amount)),
        fact(t("order.shipping"), money(o.shipping_fee)),
        fact(t("order.channel"), `${label("channel", o.payment_channel)}${o.channel_trade_no ? ` · ${o.channel_trade_no}` : ""}`),
        fact(t("order.paid_at"), time(o.paid_at)),
        fact(t("order.deadline"), time(o.refund_deadline)),
        fact(t("order.usage"), usage),
        fact(t("order.completion"), percent(Number(o.service_completion))),
        fact(t("order.customized"), t(o.customized ? "yes" : "no")),
        fact(t("order.fault"), o.platform_fault ? label("reason", o.platform_fault) : "—"),
        fact(
          t("order.gifts"),
          o.gifts.length ? o.gifts.map((gift) => `${gift.title || gift.sku} (${money(gift.value)})`).join("、") : "—",
        ),
      ),
    );
  }

  preview(item) {
    const name = t("evidence.alt", { kind: label("evidence", item.kind) });
    if (!item.download_url) return h("div", { class: "preview none" }, t("evidence.no_preview"));
    if (item.content_type.startsWith("image/")) {
      return h(
        "a",
        { id: `evidence-${item.evidence_id}`, class: "preview", href: item.download_url, target: "_blank", rel: "noopener noreferrer" },
        h("img", { src: item.download_url, alt: name, loading: "lazy" }),
      );
    }
    return h(
      "a",
      { id: `evidence-${item.evidence_id}`, class: "preview pdf", href: item.download_url, target: "_blank", rel: "noopener noreferrer" },
      t("evidence.open_pdf", { kind: label("evidence", item.kind) }),
    );
  }

  evidenceSection(r) {
    const signature = JSON.stringify(r.evidence.map((e) => [e.evidence_id, e.uploaded, e.problem]));
    const kept = this.evidence;
    if (kept && kept.signature === signature && kept.language === language() && Date.now() - kept.at < EVIDENCE_FRESH_MS) {
      return kept.node;
    }
    const node = h(
      "section",
      { class: "card", "aria-labelledby": "evidence-title" },
      h("h3", { id: "evidence-title" }, t("evidence.title"), " ", h("span", { class: "count" }, String(r.evidence.length))),
      r.evidence.length === 0
        ? h("p", { class: "muted" }, t("evidence.none"))
        : h(
            "ul",
            { class: "evidence-list" },
            r.evidence.map((item) =>
              h(
                "li",
                { class: "evidence-item" },
                this.preview(item),
                h("p", { class: "evidence-meta" }, h("strong", {}, label("evidence", item.kind)), " · ", item.content_type, " · ", bytes(item.size)),
                item.uploaded
                  ? null
                  : h("p", { class: "field-error" }, item.problem ? t("evidence.problem", { problem: item.problem }) : t("evidence.not_uploaded")),
              ),
            ),
          ),
    );
    this.evidence = { signature, node, at: Date.now(), language: language() };
    return node;
  }

  timeline(r) {
    return h(
      "section",
      { class: "card", "aria-labelledby": "history-title" },
      h("h3", { id: "history-title" }, t("history.title")),
      h(
        "ol",
        { class: "timeline" },
        r.history.map((entry) =>
          h(
            "li",
            { class: ["event", `action-${entry.action}`] },
            h("time", { datetime: entry.at }, time(entry.at)),
            h(
              "p",
              { class: "event-line" },
              h("strong", {}, label("action", entry.action)),
              " · ",
              entry.actor,
              entry.to ? h("span", { class: "transition" }, `${entry.from ? label("status", entry.from) : "—"} → ${label("status", entry.to)}`) : null,
              entry.rule ? h("span", { class: "rule-tag", title: label("rule", entry.rule) }, entry.rule) : null,
            ),
            entry.note ? h("p", { class: "note" }, entry.note) : null,
          ),
        ),
      ),
    );
  }

  steps(r) {
    const head = ["step", "status", "attempts", "last_error", "next_attempt", "when"];
    return h(
      "section",
      { class: "card", "aria-labelledby": "steps-title" },
      h("h3", { id: "steps-title" }, t("steps.title")),
      r.steps.length === 0
        ? h("p", { class: "muted" }, t("steps.none"))
        : h(
            "div",
            { class: "table-wrap" },
            h(
              "table",
              { class: "steps" },
              h("caption", { class: "visually-hidden" }, t("steps.title")),
              h("thead", {}, h("tr", {}, head.map((name) => h("th", { scope: "col" }, t(`steps.${name}`))))),
              h(
                "tbody",
                {},
                r.steps.map((step) =>
                  h(
                    "tr",
                    { class: `step-${step.status}` },
                    h("td", { class: "when" }, label("step", step.step)),
                    h("td", {}, h("span", { class: ["pill", `step-status-${step.status}`] }, label("step_status", step.status))),
                    h("td", { class: "number" }, String(step.attempts)),
                    h("td", { class: "error-text" }, step.last_error || "—"),
                    h("td", { class: "when" }, shortTime(step.next_attempt_at)),
                    h("td", { class: "when" }, `${shortTime(step.started_at)} → ${step.ended_at ? shortTime(step.ended_at) : "…"}`),
                  ),
                ),
              ),
            ),
          ),
    );
  }

  thread(r) {
    const open = DECIDING.includes(r.status);
    const body = h("textarea", { id: "reply-body", rows: 3, maxlength: MAX_TEXT });
    return h(
      "section",
      { class: "card thread", "aria-labelledby": "thread-title" },
      h("h3", { id: "thread-title" }, t("thread.title")),
      r.messages.length === 0
        ? h("p", { class: "muted" }, t("thread.empty"))
        : h(
            "ol",
            { class: "messages" },
            r.messages.map((message) =>
              h(
                "li",
                { class: ["message", `from-${message.author_role}`] },
                h("p", { class: "message-meta" }, label("role", message.author_role), " · ", time(message.at)),
                h("p", { class: "message-body" }, message.body),
              ),
            ),
          ),
      open
        ? this.form("request-info", {
            legend: t("reply.legend"),
            key: "I",
            enabled: this.mine(),
            why: this.whyNot(r),
            tone: "primary",
            submit: t("reply.submit"),
            fields: [this.field("reply-body", t("reply.body"), body, t("reply.hint"))],
          })
        : h("p", { class: "hint" }, t("reply.closed", { status: label("status", r.status) })),
    );
  }

  render() {
    rebuildKeeping(this.element, () => {
      const r = this.refund;
      if (!r) {
        fill(
          this.element,
          h("h2", { id: "refund-title", tabindex: "-1" }, this.id ? t("refund.title", { id: this.id }) : t("refund.none")),
          this.loadError ? errorBox(this.loadError, t("refund.load")) : h("p", { class: "muted" }, this.id ? t("refund.loading") : t("refund.pick")),
        );
        return;
      }
      const due = TERMINAL.includes(r.status) ? null : dueOf(r);
      fill(
        this.element,
        h(
          "header",
          { class: "refund-head" },
          h("h2", { id: "refund-title", tabindex: "-1" }, t("refund.title", { id: r.refund_id })),
          h(
            "p",
            { class: "refund-status" },
            h("span", { class: ["status", `status-${r.status}`] }, label("status", r.status)),
            escalationBadge(r.escalation_level),
            due ? dueText(due) : null,
            r.fast_track ? h("span", { class: "badge" }, t("refund.fast_track")) : null,
            MOVING.includes(r.status) ? h("span", { class: "muted small" }, t("refund.moving")) : null,
          ),
          h(
            "dl",
            { class: "facts inline" },
            fact(t("refund.amount"), money(r.amount)),
            fact(t("refund.approved"), money(r.approved_amount)),
            fact(t("refund.assignee"), r.assignee || t("queue.unclaimed")),
            fact(t("refund.user"), r.user_id),
            fact(t("refund.created"), time(r.created_at)),
            fact(t("refund.updated"), time(r.updated_at)),
          ),
        ),
        this.loadError ? errorBox(this.loadError, t("refund.load")) : null,
        h(
          "div",
          { class: "refund-body" },
          h("div", { class: "refund-facts" }, this.application(r), this.order(r.order), this.evidenceSection(r), this.timeline(r)),
          h("div", { class: "refund-work" }, this.decisions(r), this.thread(r)),
        ),
        this.steps(r),
      );
    });
  }
}
