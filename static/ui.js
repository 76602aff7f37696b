"use strict";
// Small DOM helpers shared by the page and the widget: an element builder, safe
// links for server data (tel:, mailto:, http(s) only), dates, counts and a debounce.
// Server data only ever reaches the DOM through textContent and these links.

(function (global) {
  const ns = global.Leadstream || (global.Leadstream = {});

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function button(text, className, onClick) {
    const b = el("button", className, text);
    b.type = "button";
    if (onClick) b.addEventListener("click", onClick);
    return b;
  }

  // Only http(s) URLs from server data; a bare "linkedin.com/in/x" gets https://.
  function httpUrl(value, base) {
    if (!value) return null;
    const text = base || /^[a-z][a-z0-9+.-]*:/i.test(value) ? value : `https://${value}`;
    try {
      const url = new URL(text, base);
      return url.protocol === "https:" || url.protocol === "http:" ? url.href : null;
    } catch {
      return null;
    }
  }

  function telHref(phone) {
    const dialable = String(phone).replace(/[^\d+]/g, "");
    return dialable.replace(/\D/g, "").length >= 3 ? `tel:${dialable}` : null;
  }

  function mailtoHref(email) {
    return /^[^\s@?&#/]+@[^\s@?&#/]+$/.test(email) ? `mailto:${email}` : null;
  }

  // <a> with text, or plain text when the href is not safe; `label` names it for screen readers.
  function link(text, href, label) {
    if (!href) return document.createTextNode(String(text ?? ""));
    const a = el("a", "", text);
    a.href = href;
    if (label) a.setAttribute("aria-label", label);
    return a;
  }

  function externalLink(text, href, label) {
    const a = link(text, href, label);
    if (a.nodeType === 1) {
      a.target = "_blank";
      a.rel = "noopener noreferrer";
    }
    return a;
  }

  const shortDate = new Intl.DateTimeFormat(undefined, { day: "numeric", month: "short", year: "numeric" });
  const shortTime = new Intl.DateTimeFormat(undefined, { timeStyle: "short" });
  const fullDate = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });

  // "14:02" today, "3 Nov 2026" before; <time> carries the exact moment.
  function timeElement(iso) {
    const t = el("time");
    const date = new Date(iso);
    if (!iso || Number.isNaN(date.getTime())) return t;
    const today = new Date().toDateString() === date.toDateString();
    t.dateTime = iso;
    t.title = fullDate.format(date);
    t.textContent = today ? `Today ${shortTime.format(date)}` : shortDate.format(date);
    return t;
  }

  const numberFormat = new Intl.NumberFormat();
  const count = (n) => numberFormat.format(n || 0);
  const percent = (part, whole) => (whole ? Math.round((100 * part) / whole) : 0);
  const plural = (n, one, many) => `${count(n)} ${n === 1 ? one : many}`;

  // fn runs once, `ms` after the last of a burst of calls.
  function debounce(fn, ms) {
    let timer = 0;
    return (...args) => {
      clearTimeout(timer);
      timer = setTimeout(() => fn(...args), ms);
    };
  }

  // crypto.randomUUID needs a secure context; getRandomValues also works on plain http.
  function randomId() {
    const bytes = crypto.getRandomValues(new Uint8Array(16));
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  ns.ui = { el, button, httpUrl, telHref, mailtoHref, link, externalLink, timeElement, count, percent, plural, debounce, randomId };
})(window);
