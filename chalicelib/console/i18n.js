// Every string the console shows comes from one dictionary per language: Chinese by default,
// English on request; the choice is remembered in this browser.

import en from "./en.js";
import zh from "./zh.js";

const DICTIONARIES = { zh, en };
const LOCALES = { zh: "zh-CN", en: "en" };
const STORAGE_KEY = "refunds-console.language";

let current = DICTIONARIES[localStorage.getItem(STORAGE_KEY)] ? localStorage.getItem(STORAGE_KEY) : "zh";

export function language() {
  return current;
}

/** The BCP 47 tag of the language shown: the page's lang attribute and Intl's locale. */
export function locale() {
  return LOCALES[current];
}

export function setLanguage(name) {
  current = DICTIONARIES[name] ? name : "zh";
  localStorage.setItem(STORAGE_KEY, current);
  document.documentElement.lang = locale();
  document.title = t("app.title");
}

/** The text of ``key``, with {name} placeholders filled from ``params``. */
export function t(key, params) {
  const text = DICTIONARIES[current][key] ?? DICTIONARIES.zh[key] ?? key;
  if (!params) return text;
  return text.replace(/\{(\w+)\}/g, (whole, name) => (name in params ? String(params[name]) : whole));
}

/** Whether the dictionary has ``key`` (a label for a status, reason, rule id...). */
export function has(key) {
  return key in DICTIONARIES[current];
}

/** A label for a value the API sends, such as a status: the dictionary's, else the value. */
export function label(group, value) {
  const key = `${group}.${value}`;
  return has(key) ? t(key) : String(value);
}
