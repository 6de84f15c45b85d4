// The search page: filters to GET /api/recordings, results as a table linking to the player.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const { api, clock, when, el, showError } = window.Helpline;
  const form = document.getElementById("search-form");
  const tbody = document.querySelector("#results tbody");
  const more = document.getElementById("more");
  const empty = document.getElementById("empty");
  const error = document.getElementById("search-error");
  let cursor = null;

  function query() {
    const params = new URLSearchParams();
    for (const [key, value] of new FormData(form)) {
      if (!value) continue;
      // datetime-local has no zone: send the reviewer's local time as an absolute instant.
      params.set(key, key === "since" || key === "until" ? new Date(value).toISOString() : value);
    }
    return params;
  }

  function row(rec) {
    const link = el("a", { href: "/ui/recordings/" + encodeURIComponent(rec.id), text: "Open",
                           class: "open" });
    return el("tr", { "data-id": rec.id },
      el("td", { text: when(rec.started_at) }),
      el("td", { text: rec.duration_s == null ? "" : clock(rec.duration_s) }),
      el("td", { text: rec.caller || "" }),
      el("td", { text: rec.did || "" }),
      el("td", { text: rec.queue || "" }),
      el("td", { text: rec.agent || "" }),
      el("td", { text: rec.disposition || "" }),
      el("td", { text: rec.consent_outcome || "" }),
      el("td", { text: rec.status }),
      el("td", {}, link));
  }

  async function load(reset) {
    error.hidden = true;
    const params = query();
    if (!reset && cursor) params.set("cursor", cursor);
    try {
      const page = await api("/api/recordings?" + params.toString());
      if (reset) tbody.replaceChildren();
      for (const rec of page.items) tbody.append(row(rec));
      cursor = page.next_cursor;
      more.hidden = !cursor;
      empty.hidden = tbody.children.length > 0;
    } catch (e) {
      showError(error, e);
    }
  }

  // The search's result as a zip (WAV, metadata, manifests, consent evidence, ledger, public key) that
  // `helpline recordings verify --bundle` checks offline. The server audits the export.
  async function exportResults() {
    error.hidden = true;
    const search = Object.fromEntries(query());
    try {
      const response = await api("/api/recordings/export", { method: "POST", body: { search }, raw: true });
      const blob = await response.blob();
      const disposition = response.headers.get("Content-Disposition") || "";
      const name = (disposition.match(/filename="?([^";]+)"?/) || [])[1] || "recordings.zip";
      const url = URL.createObjectURL(blob);
      const link = el("a", { href: url, download: name, hidden: "" });
      document.body.append(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(url), 60_000);
    } catch (e) {
      showError(error, e);
    }
  }

  document.getElementById("export").addEventListener("click", exportResults);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    load(true);
  });
  more.addEventListener("click", () => load(false));
  load(true);
});
