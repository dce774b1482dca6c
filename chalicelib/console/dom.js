// Building the DOM without HTML strings: the page's Content-Security-Policy refuses every
// string sink (Trusted Types), so text always lands as text.

const SVG = "http://www.w3.org/2000/svg";

function apply(el, attrs) {
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      el.addEventListener(name.slice(2), value);
    } else if (name === "class") {
      el.setAttribute("class", Array.isArray(value) ? value.filter(Boolean).join(" ") : value);
    } else if (name === "dataset") {
      Object.assign(el.dataset, value);
    } else if (name === "value" || name === "checked" || name === "selected") {
      el[name] = value;
    } else {
      el.setAttribute(name, value === true ? "" : String(value));
    }
  }
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** An HTML element: h("button", {type: "button", onclick}, "text", child, ...). */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  apply(el, attrs);
  append(el, children);
  return el;
}

/** An SVG element, attributes as in h(). */
export function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG, tag);
  apply(el, attrs);
  append(el, children);
  return el;
}

/** Replace an element's children. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/**
 * A labelled form field: the label, the control, a hint and the problem with its value,
 * both read out with the control (aria-describedby).
 */
export function field(id, text, control, hint, problem) {
  const described = [hint ? `${id}-hint` : null, problem ? `${id}-error` : null].filter(Boolean).join(" ");
  if (described) control.setAttribute("aria-describedby", described);
  if (problem) control.setAttribute("aria-invalid", "true");
  return h(
    "div",
    { class: "field" },
    h("label", { for: id }, text),
    control,
    hint ? h("p", { id: `${id}-hint`, class: "hint" }, hint) : null,
    problem ? h("p", { id: `${id}-error`, class: "field-error" }, problem) : null,
  );
}

let counter = 0;
/** A fresh id for label/aria wiring. */
export function uid(prefix) {
  counter += 1;
  return `${prefix}-${counter}`;
}

/**
 * Rebuild part of the page without losing what the agent was doing in it: field values
 * typed so far, which field had focus, and the caret. Fields are matched by id.
 */
export function rebuildKeeping(container, rebuild) {
  const kept = new Map();
  for (const field of container.querySelectorAll("input, textarea, select")) {
    if (!field.id || field.dataset.fresh !== undefined) continue;
    kept.set(field.id, field.type === "checkbox" || field.type === "radio" ? field.checked : field.value);
  }
  const active = document.activeElement;
  const focused = active && container.contains(active) ? active.id : null;
  const caret =
    active && typeof active.selectionStart === "number" && active.type !== "number"
      ? [active.selectionStart, active.selectionEnd]
      : null;
  rebuild();
  for (const [id, value] of kept) {
    const field = document.getElementById(id);
    if (!field || !container.contains(field) || field.dataset.fresh !== undefined) continue;
    if (field.type === "checkbox" || field.type === "radio") field.checked = value;
    else field.value = value;
  }
  if (focused) {
    const again = document.getElementById(focused);
    if (again && container.contains(again)) {
      again.focus({ preventScroll: true });
      if (caret && typeof again.setSelectionRange === "function") {
        try {
          again.setSelectionRange(caret[0], caret[1]);
        } catch {
          // Not a text field any more: the caret has nowhere to go.
        }
      }
    }
  }
}
