// Shared by every page: the API fetch wrapper (CSRF header on unsafe methods, sign-in redirect on
// 401) and small formatting helpers. Loaded as a classic script; it defines window.Helpline.
"use strict";

(function () {
  const UNSAFE = new Set(["POST", "PUT", "PATCH", "DELETE"]);

  function cookie(name) {
    for (const part of document.cookie.split(";")) {
      const [key, ...rest] = part.trim().split("=");
      if (key === name) return decodeURIComponent(rest.join("="));
    }
    return null;
  }

  class ApiError extends Error {
    constructor(status, body) {
      super((body && body.error) || `HTTP ${status}`);
      this.status = status;
      this.field = body && body.field;
    }
  }

  function toLogin() {
    const back = location.pathname + location.search;
    location.assign("/ui/login.html?next=" + encodeURIComponent(back));
  }

  // fetch() for the API: JSON in and out, same-origin cookies, X-CSRF-Token from helpline_csrf.
  async function api(path, options = {}) {
    const method = (options.method || "GET").toUpperCase();
    const headers = new Headers(options.headers || {});
    headers.set("Accept", "application/json");
    let body = options.body;
    if (body !== undefined && !(body instanceof Blob) && typeof body !== "string") {
      body = JSON.stringify(body);
      headers.set("Content-Type", "application/json");
    }
    if (UNSAFE.has(method)) {
      const token = cookie("helpline_csrf");
      if (token) headers.set("X-CSRF-Token", token);
    }
    const response = await fetch(path, { method, headers, body, credentials: "same-origin" });
    if (response.status === 401 && !options.noRedirect) {
      toLogin();
      throw new ApiError(401, { error: "sign in first" });
    }
    const type = response.headers.get("Content-Type") || "";
    const data = type.includes("application/json") ? await response.json() : null;
    if (!response.ok) throw new ApiError(response.status, data);
    return options.raw ? response : data;
  }

  function clock(seconds) {
    const s = Math.max(0, Math.floor(seconds));
    const h = Math.floor(s / 3600);
    const mm = String(Math.floor((s % 3600) / 60)).padStart(2, "0");
    const ss = String(s % 60).padStart(2, "0");
    return h > 0 ? `${h}:${mm}:${ss}` : `${mm}:${ss}`;
  }

  function when(iso) {
    if (!iso) return "";
    const d = new Date(iso);
    return isNaN(d) ? iso : d.toLocaleString();
  }

  // Build an element: el("td", {class: "x", text: "y"}, child...).
  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs)) {
      if (value === undefined || value === null) continue;
      if (key === "text") node.textContent = value;
      else if (key === "class") node.className = value;
      else node.setAttribute(key, value);
    }
    for (const child of children) node.append(child);
    return node;
  }

  function showError(target, error) {
    target.textContent = error instanceof Error ? error.message : String(error);
    target.hidden = false;
  }

  async function signOut() {
    try {
      await api("/api/session", { method: "DELETE", noRedirect: true });
    } finally {
      location.assign("/ui/login.html");
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    const out = document.getElementById("sign-out");
    if (out) out.addEventListener("click", signOut);
  });

  window.Helpline = { api, ApiError, clock, when, el, showError, cookie, toLogin };
})();
