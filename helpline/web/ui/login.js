// Sign-in: POST /api/session sets the session and CSRF cookies; then go where we came from.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const { api, showError } = window.Helpline;
  const form = document.getElementById("login-form");
  const error = document.getElementById("login-error");

  function next() {
    const target = new URLSearchParams(location.search).get("next") || "";
    // Only same-site paths: never an absolute URL an attacker put in the link.
    return target.startsWith("/") && !target.startsWith("//") ? target : "/ui/recordings.html";
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.hidden = true;
    const body = {
      username: document.getElementById("username").value,
      password: document.getElementById("password").value,
    };
    try {
      await api("/api/session", { method: "POST", body, noRedirect: true });
      location.assign(next());
    } catch (e) {
      showError(error, e.status === 401 ? "wrong username or password" : e);
    }
  });
});
