// The reviewer's player: two waveform lanes from precomputed peaks, <audio> routed through Web Audio
// (splitter -> one gain per lane -> merger) for mute/solo, speed with pitch kept, skips, keyboard,
// overlays from the metadata and the integrity badge. Audio comes through play tickets: each play
// asks the API for the time range it will cover (that request is what the audit log records).
"use strict";

(function () {
  const { api, clock, when, el, showError } = window.Helpline;
  const FRAME_S = 0.02;
  const LANE_COLOURS = ["#2563eb", "#059669"];
  const PAUSE_LABELS = { sensitive: "PCI pause", manual: "Manual pause", withdrawn: "Consent withdrawn" };

  const state = {
    id: null, recording: null, duration: 0, peaks: null, ticket: null, pendingTicket: null,
    ctx: null, gains: [], lanes: [{ muted: false, solo: false, gain: 1 }, { muted: false, solo: false, gain: 1 }],
  };

  const $ = (id) => document.getElementById(id);

  function recordingId() {
    const fromQuery = new URLSearchParams(location.search).get("id");
    if (fromQuery) return fromQuery;
    const parts = location.pathname.split("/").filter(Boolean);
    return decodeURIComponent(parts[parts.length - 1] || "");
  }

  // ---- overlays -----------------------------------------------------------------------------------
  // Times in the metadata are 20 ms frames ("start", "end", "frame") or seconds ("*_s").
  function seconds(item, key) {
    if (typeof item[key + "_s"] === "number") return item[key + "_s"];
    if (typeof item[key] === "number") return item[key] * FRAME_S;
    return null;
  }

  function describe(item) {
    const kind = item.kind || item.type || "event";
    const data = item.data || item;
    if (kind === "pause") return PAUSE_LABELS[item.reason] || `Pause (${item.reason || "?"})`;
    if (kind === "hold") return data.held === false ? "Hold ended" : "Hold";
    if (kind === "transfer") return "Transfer" + (data.target ? ` → ${data.target}` : "");
    if (kind === "agent") return "Agent " + (data.agent || data.extension || "") + " connected";
    if (kind === "agent_lost") return "Agent lost";
    if (kind === "consent") return `Consent ${data.outcome || ""}${data.method ? " (" + data.method + ")" : ""}`;
    if (kind === "consent_withdrawn") return "Consent withdrawn";
    if (kind === "stopped") return "Recording stopped";
    if (kind === "dtmf") return "Keypad tones blanked";
    if (kind === "gate") {
      const on = (flag) => (flag ? "on" : "off");
      return `Recording: caller ${on(data.caller)}, agent ${on(data.agent)}`;
    }
    return kind.replace(/_/g, " ");
  }

  function overlays(recording) {
    const items = [];
    let openHold = null;
    const sorted = [...(recording.overlays || [])].sort(
      (a, b) => (seconds(a, "start") ?? seconds(a, "frame") ?? 0) - (seconds(b, "start") ?? seconds(b, "frame") ?? 0));
    for (const raw of sorted) {
      const start = seconds(raw, "start") ?? seconds(raw, "frame") ?? seconds(raw, "at");
      if (start === null) continue;
      const kind = raw.kind || raw.type || "event";
      // A hold mark and the matching "held: false" mark make one span.
      if (kind === "hold") {
        const held = (raw.data || raw).held !== false;
        if (held && openHold === null) { openHold = start; continue; }
        if (!held && openHold !== null) {
          items.push({ kind, start: openHold, end: start, text: `Hold ${clock(openHold)}–${clock(start)}` });
          openHold = null;
          continue;
        }
      }
      const endRaw = seconds(raw, "end");
      const end = endRaw !== null && endRaw > start ? endRaw : null;
      const label = describe(raw);
      items.push({ kind, start, end, text: end !== null ? `${label} ${clock(start)}–${clock(end)}` : `${label} at ${clock(start)}` });
    }
    if (openHold !== null) {
      items.push({ kind: "hold", start: openHold, end: state.duration,
                   text: `Hold ${clock(openHold)}–${clock(state.duration)}` });
    }
    items.sort((a, b) => a.start - b.start);
    return items;
  }

  function drawOverlays(items) {
    const layer = $("overlay-layer");
    const list = $("overlay-list");
    layer.replaceChildren();
    list.replaceChildren();
    const total = Math.max(state.duration, 0.001);
    for (const item of items) {
      const mark = el("div", { class: `overlay overlay-${item.kind} ${item.end === null ? "point" : "span"}`,
                               title: item.text });
      mark.style.left = `${(100 * item.start) / total}%`;
      if (item.end !== null) mark.style.width = `${(100 * (item.end - item.start)) / total}%`;
      layer.append(mark);
      const entry = el("li", { class: `overlay-item overlay-${item.kind}` },
        el("button", { type: "button", class: "link", text: item.text }));
      entry.firstChild.addEventListener("click", () => seek(item.start));
      list.append(entry);
    }
    if (!items.length) list.append(el("li", { text: "None recorded." }));
  }

  // ---- waveform -------------------------------------------------------------------------------------
  // Peaks (helpline.recording.peaks): {"rate": 20, "channels": 2, "length": n,
  // "data": [[min, max, min, max, ...] per channel]} with values -128..127.
  function lanesOf(peaks) {
    const channels = Array.isArray(peaks.data) ? peaks.data : Array.isArray(peaks.channels) ? peaks.channels : [];
    return channels.map((lane) => {
      if (Array.isArray(lane) && lane.length && Array.isArray(lane[0])) return lane.flat();
      return lane;
    });
  }

  function drawWaveform() {
    const canvas = $("waveform");
    const ratio = window.devicePixelRatio || 1;
    const width = Math.max(300, Math.floor(canvas.clientWidth * ratio));
    const height = Math.max(120, Math.floor(canvas.clientHeight * ratio));
    canvas.width = width;
    canvas.height = height;
    const g = canvas.getContext("2d");
    g.fillStyle = "#f8fafc";
    g.fillRect(0, 0, width, height);
    if (!state.peaks) return;
    const lanes = lanesOf(state.peaks);
    const laneHeight = height / 2;
    const scale = 128;
    lanes.slice(0, 2).forEach((values, index) => {
      const bins = Math.floor(values.length / 2);
      const mid = laneHeight * index + laneHeight / 2;
      const lane = state.lanes[index];
      g.fillStyle = audible(index) ? LANE_COLOURS[index] : "#94a3b8";
      for (let x = 0; x < width; x++) {
        const from = Math.floor((x * bins) / width);
        const to = Math.max(from + 1, Math.floor(((x + 1) * bins) / width));
        let lo = 0;
        let hi = 0;
        for (let b = from; b < to && b < bins; b++) {
          lo = Math.min(lo, values[2 * b]);
          hi = Math.max(hi, values[2 * b + 1]);
        }
        const top = mid - (hi / scale) * (laneHeight / 2) * lane.gain;
        const bottom = mid - (lo / scale) * (laneHeight / 2) * lane.gain;
        g.fillRect(x, top, 1, Math.max(1, bottom - top));
      }
      g.fillStyle = "#cbd5e1";
      g.fillRect(0, laneHeight * (index + 1) - 1, width, 1);
    });
    canvas.dataset.drawn = "true";
  }

  // ---- Web Audio: one gain per lane -------------------------------------------------------------------
  function audible(index) {
    const anySolo = state.lanes.some((l) => l.solo);
    const lane = state.lanes[index];
    return !lane.muted && (!anySolo || lane.solo);
  }

  function applyGains() {
    state.gains.forEach((node, i) => {
      node.gain.value = audible(i) ? state.lanes[i].gain : 0;
    });
    document.querySelectorAll(".lane").forEach((row, i) => {
      row.querySelector(".mute").setAttribute("aria-pressed", String(state.lanes[i].muted));
      row.querySelector(".solo").setAttribute("aria-pressed", String(state.lanes[i].solo));
      row.classList.toggle("silent", !audible(i));
    });
    drawWaveform();
  }

  function graph() {
    if (state.ctx) return;
    const audio = $("audio");
    const ctx = new AudioContext();
    const source = ctx.createMediaElementSource(audio);
    const splitter = ctx.createChannelSplitter(2);
    const merger = ctx.createChannelMerger(2);
    source.connect(splitter);
    state.gains = [0, 1].map((channel) => {
      const gain = ctx.createGain();
      splitter.connect(gain, channel);
      // Each lane goes to both ears: a reviewer on one earpiece still hears both parties.
      gain.connect(merger, 0, 0);
      gain.connect(merger, 0, 1);
      return gain;
    });
    merger.connect(ctx.destination);
    state.ctx = ctx;
    applyGains();
  }

  function laneControls(channels) {
    const box = $("lanes");
    box.replaceChildren();
    [0, 1].forEach((index) => {
      const info = channels.find((c) => c.channel === index) || {};
      const name = `${info.role || "channel " + index}${info.party ? ": " + info.party : ""}`;
      const mute = el("button", { type: "button", class: "mute", "aria-pressed": "false", text: "Mute" });
      const solo = el("button", { type: "button", class: "solo", "aria-pressed": "false", text: "Solo" });
      const gain = el("input", { type: "range", min: "0", max: "2", step: "0.05", value: "1",
                                  class: "gain", "aria-label": `Volume of ${name}` });
      const swatch = el("span", { class: `swatch lane-${index}` });
      const row = el("div", { class: "lane", "data-lane": String(index) },
        swatch, el("span", { class: "lane-name", text: name }), mute, solo, gain);
      mute.addEventListener("click", () => toggle(index, "muted"));
      solo.addEventListener("click", () => toggle(index, "solo"));
      gain.addEventListener("input", () => {
        state.lanes[index].gain = Number(gain.value);
        applyGains();
      });
      box.append(row);
    });
  }

  function toggle(index, key) {
    state.lanes[index][key] = !state.lanes[index][key];
    applyGains();
  }

  // ---- playing through tickets ------------------------------------------------------------------------
  function covered(t) {
    const ticket = state.ticket;
    return ticket && t >= ticket.start && t < ticket.end - FRAME_S;
  }

  async function ticketFor(start) {
    const from = Math.max(0, Math.min(start, state.duration));
    const body = { start: Number(from.toFixed(2)), end: Number(state.duration.toFixed(2)) };
    const ticket = await api(`/api/recordings/${encodeURIComponent(state.id)}/play`, { method: "POST", body });
    state.ticket = ticket;
    const audio = $("audio");
    const rate = Number($("speed").value);
    audio.src = ticket.audio_url;
    audio.defaultPlaybackRate = rate;
    audio.playbackRate = rate;
    audio.preservesPitch = true;
    await new Promise((resolve, reject) => {
      audio.addEventListener("loadedmetadata", resolve, { once: true });
      audio.addEventListener("error", () => reject(new Error("the audio could not be loaded")), { once: true });
      audio.load();
    });
    audio.currentTime = ticket.start;
  }

  async function play() {
    const audio = $("audio");
    graph();
    if (state.ctx.state === "suspended") await state.ctx.resume();
    const at = state.ticket ? audio.currentTime : 0;
    if (!covered(at)) {
      // Playing on from the end starts again at the beginning.
      await ticketFor(at >= state.duration - FRAME_S ? 0 : at);
    }
    await audio.play();
  }

  async function playPause() {
    const audio = $("audio");
    try {
      if (audio.paused) await play();
      else audio.pause();
    } catch (e) {
      showError($("player-error"), e);
    }
  }

  async function seek(t) {
    const audio = $("audio");
    const target = Math.max(0, Math.min(t, state.duration));
    const wasPlaying = !audio.paused;
    try {
      if (covered(target)) {
        audio.currentTime = target;
      } else if (state.ticket || wasPlaying) {
        audio.pause();
        await ticketFor(target);
        if (wasPlaying) await audio.play();
      } else {
        state.cursor = target;
      }
      showTime();
    } catch (e) {
      showError($("player-error"), e);
    }
  }

  function position() {
    const audio = $("audio");
    return state.ticket ? audio.currentTime : state.cursor || 0;
  }

  function showTime() {
    const t = position();
    $("time").textContent = `${clock(t)} / ${clock(state.duration)}`;
    $("playhead").style.left = `${(100 * t) / Math.max(state.duration, 0.001)}%`;
  }

  function onTimeUpdate() {
    const audio = $("audio");
    // The ticket's window ends here: beyond it the server sends silence, so stop rather than play it.
    if (state.ticket && audio.currentTime >= state.ticket.end && !audio.paused) audio.pause();
    showTime();
  }

  function setSpeed(delta) {
    const select = $("speed");
    const next = Math.max(0, Math.min(select.options.length - 1, select.selectedIndex + delta));
    select.selectedIndex = next;
    select.dispatchEvent(new Event("change"));
  }

  function onKey(event) {
    const tag = (event.target && event.target.tagName) || "";
    if (["INPUT", "SELECT", "TEXTAREA"].includes(tag) || event.altKey || event.ctrlKey || event.metaKey) return;
    const step = event.shiftKey ? 15 : 5;
    const actions = {
      " ": playPause,
      ArrowLeft: () => seek(position() - step),
      ArrowRight: () => seek(position() + step),
      "[": () => setSpeed(-1),
      "]": () => setSpeed(1),
    };
    let action = actions[event.key];
    const lane = { "1": 0, "2": 1, "!": 0, "@": 1 }[event.key];
    if (lane !== undefined) action = () => toggle(lane, event.shiftKey ? "solo" : "muted");
    if (!action) return;
    event.preventDefault();
    action();
  }

  // ---- page ------------------------------------------------------------------------------------------------
  function facts(rec) {
    const rows = [
      ["Caller", rec.caller], ["DID", rec.did], ["Queue", rec.queue], ["Agent", rec.agent],
      ["Started", when(rec.started_at)], ["Duration", rec.duration_s == null ? "" : clock(rec.duration_s)],
      ["Disposition", rec.disposition], ["Consent", rec.consent_outcome], ["Status", rec.status],
      ["Retention", `${rec.retention_policy}, delete after ${when(rec.delete_after)}`],
      ["Legal hold", rec.legal_hold ? `${rec.legal_hold.reason || ""} (by ${rec.legal_hold.by || "?"})` : "none"],
      ["Manifest SHA-256", rec.manifest_sha256],
    ];
    const dl = $("facts");
    dl.replaceChildren();
    for (const [key, value] of rows) dl.append(el("dt", { text: key }), el("dd", { text: value ?? "" }));
  }

  function consentTable(records) {
    const tbody = document.querySelector("#consent tbody");
    tbody.replaceChildren();
    for (const c of records) {
      tbody.append(el("tr", {},
        el("td", { text: c.party }), el("td", { text: c.outcome }), el("td", { text: c.method }),
        el("td", { text: c.mode }), el("td", { text: `${c.policy_id} ${c.policy_version}` }),
        el("td", { text: when(c.decided_at) }), el("td", { class: "hash", text: c.record_sha256 })));
    }
  }

  async function integrity() {
    const badge = $("integrity");
    try {
      const report = await api(`/api/recordings/${encodeURIComponent(state.id)}/integrity`);
      badge.dataset.status = report.status;
      badge.textContent = report.status;
      $("integrity-report").textContent = JSON.stringify(report, null, 2);
    } catch (e) {
      badge.dataset.status = "unverified";
      badge.textContent = "unverified";
      $("integrity-report").textContent = e.message;
    }
  }

  async function load() {
    state.id = recordingId();
    const error = $("player-error");
    try {
      const view = await api(`/api/recordings/${encodeURIComponent(state.id)}`);
      const rec = view.recording;
      state.recording = rec;
      state.duration = rec.duration_s || 0;
      $("title").textContent = `${rec.caller || "unknown caller"} → ${rec.did || ""}`;
      document.title = `${rec.caller || "Recording"} · Helpline`;
      facts(rec);
      consentTable(view.consent || []);
      laneControls(rec.channels || []);
      drawOverlays(overlays(rec));
      showTime();
      const download = $("download");
      download.href = `/api/recordings/${encodeURIComponent(state.id)}/download`;
      download.hidden = !view.can_download;
      integrity();
      state.peaks = await api(`/api/recordings/${encodeURIComponent(state.id)}/peaks`);
      drawWaveform();
    } catch (e) {
      showError(error, e);
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    const audio = $("audio");
    $("play").addEventListener("click", playPause);
    $("back5").addEventListener("click", () => seek(position() - 5));
    $("back15").addEventListener("click", () => seek(position() - 15));
    $("fwd5").addEventListener("click", () => seek(position() + 5));
    $("fwd15").addEventListener("click", () => seek(position() + 15));
    $("speed").addEventListener("change", () => {
      const rate = Number($("speed").value);
      audio.preservesPitch = true;
      audio.defaultPlaybackRate = rate;
      audio.playbackRate = rate;
    });
    $("timeline").addEventListener("click", (event) => {
      const box = event.currentTarget.getBoundingClientRect();
      seek(((event.clientX - box.left) / box.width) * state.duration);
    });
    audio.addEventListener("timeupdate", onTimeUpdate);
    audio.addEventListener("play", () => { $("play").textContent = "Pause"; });
    audio.addEventListener("pause", () => { $("play").textContent = "Play"; });
    document.addEventListener("keydown", onKey);
    window.addEventListener("resize", drawWaveform);
    load();
  });
})();
