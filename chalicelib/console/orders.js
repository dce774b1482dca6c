// X1: an order the system marked wrongly (a "completed" order the user cannot apply for) is
// corrected by customer service, with a note (PUT /admin/orders/{order_id}/status).

import { field, fill, h, rebuildKeeping } from "./dom.js";
import { label, t } from "./i18n.js";
import { announce, confirmDialog, errorBox } from "./notice.js";

const ORDER_STATUSES = ["paid", "delivered", "shipped", "completed", "cancelled"];

export class OrderCorrectionView {
  constructor({ api }) {
    this.api = api;
    this.invalid = {};
    this.error = null;
    this.result = null;
    this.busy = false;
    this.element = h("section", { class: "orders page", "aria-labelledby": "orders-title" });
  }

  start() {
    this.render();
  }

  value(id) {
    return this.element.querySelector(`#${id}`).value.trim();
  }

  async submit() {
    const orderId = this.value("order-id");
    const status = this.value("order-status");
    const note = this.value("order-note");
    this.invalid = {};
    if (!orderId) this.invalid["order-id"] = t("orders.id_required");
    if (!status) this.invalid["order-status"] = t("orders.status_required");
    if (!note) this.invalid["order-note"] = t("orders.note_required");
    if (Object.keys(this.invalid).length) {
      this.render();
      this.element.querySelector("[aria-invalid='true']").focus();
      return;
    }
    const confirmed = await confirmDialog({
      title: t("orders.confirm_title"),
      lines: [t("orders.confirm_body", { order: orderId, status: label("order_status", status) })],
      confirm: t("orders.confirm_ok"),
    });
    if (!confirmed) return;
    this.busy = true;
    this.render();
    try {
      this.result = await this.api.correctOrder(orderId, { status, note });
      this.error = null;
      for (const field of this.element.querySelectorAll("input, textarea, select")) field.dataset.fresh = "";
      announce(t("orders.done", { order: orderId }));
    } catch (error) {
      this.error = error;
      this.result = null;
    } finally {
      this.busy = false;
    }
    this.render();
  }

  field(id, text, control, hint) {
    return field(id, text, control, hint, this.invalid[id]);
  }


  render() {
    rebuildKeeping(this.element, () => {
      const result = this.result;
      fill(
        this.element,
        h("h2", { id: "orders-title" }, t("orders.title")),
        h("p", { class: "hint" }, t("orders.about")),
        h(
          "form",
          {
            class: "card narrow",
            novalidate: true,
            onsubmit: (event) => {
              event.preventDefault();
              this.submit();
            },
          },
          h(
            "fieldset",
            { disabled: this.busy },
            h("legend", {}, t("orders.legend")),
            this.field("order-id", t("orders.id"), h("input", { id: "order-id", type: "text", autocomplete: "off" })),
            this.field(
              "order-status",
              t("orders.status"),
              h(
                "select",
                { id: "order-status" },
                h("option", { value: "" }, t("orders.choose")),
                ORDER_STATUSES.map((status) => h("option", { value: status }, label("order_status", status))),
              ),
            ),
            this.field("order-note", t("orders.note"), h("textarea", { id: "order-note", rows: 3, maxlength: 2000 }), t("orders.note_hint")),
            h("div", { class: "form-actions" }, h("button", { type: "submit", id: "order-submit", class: "danger" }, t("orders.submit"))),
          ),
          this.error ? errorBox(this.error, t("orders.legend")) : null,
        ),
        result
          ? h(
              "p",
              { class: "notice ok", role: "status" },
              t("orders.result", { order: result.order_id, status: label("order_status", result.status), version: result.version }),
            )
          : null,
      );
    });
  }
}
