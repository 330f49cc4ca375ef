// The quictun dashboard: polls the endpoint's own API (/sessions, /tunnels)
// once a second and keeps the last minutes of history in the page, so the
// endpoint stores nothing for a dashboard that may never be open. Every value
// from the network (sniffed properties above all) reaches the page through
// textContent, never as markup; the server's Content-Security-Policy forbids
// inline scripts besides.
"use strict";

const POLL_MS = 1000;
const HISTORY_MS = 5 * 60 * 1000; // what the charts show
const MAX_CHARTED_TUNNELS = 12; // tunnels past it get a card without a chart
const MAX_CHARTED_SESSIONS = 8;
const TOKEN_KEY = "quictun-httpd-token";

let token = sessionStorage.getItem(TOKEN_KEY) || "";
takeTokenFromFragment();

const sessionHistory = []; // {t, rtt: {remote: ms}, lossIn, repaired, unrepaired, quicLost, overhead, peerLoss, lossInPct}
const tunnelHistory = new Map(); // uuid -> [[Date, upBits, downBits], ...]
const cards = new Map(); // uuid -> {el, chart, fields}
const charts = {};
let previous = null; // the last poll's counters, for rates
let timer = 0;

// A link like http://127.0.0.1:8080/#token=SECRET opens the board at once:
// the fragment never goes to the server or its logs, and it is removed from
// the address bar here.
function takeTokenFromFragment() {
  const m = location.hash.match(/(?:^#|&)token=([^&]*)/);
  if (!m) return;
  token = decodeURIComponent(m[1]);
  sessionStorage.setItem(TOKEN_KEY, token);
  history.replaceState(null, "", location.pathname + location.search);
}

class Unauthorized extends Error {}

async function api(method, path) {
  const headers = token ? { Authorization: "Bearer " + token } : {};
  const r = await fetch(path, { method, headers, cache: "no-store" });
  if (r.status === 401) throw new Unauthorized("token refused");
  let body = null;
  try { body = await r.json(); } catch (e) { /* an answer that is not JSON */ }
  if (!r.ok) throw new Error((body && body.error) || r.status + " " + r.statusText);
  return body;
}

function el(tag, className, text) {
  const e = document.createElement(tag);
  if (className) e.className = className;
  if (text !== undefined) e.textContent = text;
  return e;
}

function fmtBits(bitsPerSecond) {
  const v = Math.abs(bitsPerSecond);
  if (v >= 1e9) return (bitsPerSecond / 1e9).toFixed(2) + " Gbit/s";
  if (v >= 1e6) return (bitsPerSecond / 1e6).toFixed(1) + " Mbit/s";
  if (v >= 1e3) return (bitsPerSecond / 1e3).toFixed(1) + " kbit/s";
  return bitsPerSecond.toFixed(0) + " bit/s";
}

function fmtBytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i === 0 ? n.toFixed(0) : n.toFixed(1)) + " " + units[i];
}

function fmtAge(since) {
  const s = Math.max(0, Math.round((Date.now() - Date.parse(since)) / 1000));
  if (s < 60) return s + " s";
  if (s < 3600) return Math.floor(s / 60) + " min " + (s % 60) + " s";
  return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
}

function trim(rows, now, at = (r) => r.t) {
  while (rows.length && now - at(rows[0]) > HISTORY_MS) rows.shift();
}

// chart draws rows on the dygraph in div, making it on first use and again
// when the series change (dygraphs fixes its labels at creation).
function chart(holder, key, div, labels, rows, extra) {
  const legend = div.previousElementSibling && div.previousElementSibling.querySelector(".legend");
  if (!rows.length || labels.length < 2) return;
  const g = holder[key];
  if (g && g.labelsKey === labels.join("\n")) {
    g.chart.updateOptions({ file: rows });
    return;
  }
  if (g) g.chart.destroy();
  holder[key] = {
    labelsKey: labels.join("\n"),
    chart: new Dygraph(div, rows, Object.assign({
      labels, legend: "always", labelsDiv: legend || undefined, labelsSeparateLines: false, connectSeparatedPoints: false,
      strokeWidth: 1.5, drawPoints: false, includeZero: true, axisLabelFontSize: 11,
      labelsKMB: false, animatedZooms: false,
    }, extra || {})),
  };
}

function showError(msg) {
  const s = document.getElementById("status");
  s.textContent = msg;
  s.className = "error";
}

async function poll() {
  timer = 0;
  try {
    const [status, tunnels] = await Promise.all([api("GET", "sessions"), api("GET", "tunnels")]);
    document.getElementById("login").hidden = true;
    document.getElementById("board").hidden = false;
    render(status, tunnels, Date.now());
    const s = document.getElementById("status");
    s.className = "";
    s.textContent = "live, updated " + new Date().toLocaleTimeString();
  } catch (e) {
    if (e instanceof Unauthorized) {
      askToken(token ? "That token was refused." : "");
      return;
    }
    showError("cannot reach the API: " + e.message);
  }
  timer = setTimeout(poll, POLL_MS);
}

function askToken(msg) {
  document.getElementById("board").hidden = true;
  document.getElementById("login").hidden = false;
  document.getElementById("login-error").textContent = msg;
  showError("the API asks for its token");
  document.getElementById("token").focus();
}

function render(status, tunnels, now) {
  renderSessions(status, now);
  renderTunnels(tunnels, now);
}

function renderSessions(status, now) {
  const sessions = status.sessions || [];
  const rec = status.recovery;
  document.getElementById("session-count").textContent = "(" + sessions.length + ")";
  const body = document.querySelector("#sessions tbody");
  body.replaceChildren(...sessions.map((s) => {
    const tr = el("tr");
    for (const v of [s.remoteEndpointAddr, s.smoothedRttMs.toFixed(2) + " ms", s.minRttMs.toFixed(2) + " ms",
      fmtBytes(s.congestionWindowBytes), s.packetsSent, s.packetsReceived, s.packetsLost]) {
      tr.append(el("td", "", String(v)));
    }
    return tr;
  }));

  const quicLost = sessions.reduce((a, s) => a + s.packetsLost, 0);
  const row = { t: now, rtt: {}, quicLost: 0, lossIn: 0, repaired: 0, unrepaired: 0, overhead: 0, peerLoss: 0, lossInPct: 0 };
  for (const s of sessions.slice(0, MAX_CHARTED_SESSIONS)) row.rtt[s.remoteEndpointAddr] = s.smoothedRttMs;
  const lost = rec ? rec.lostRandom + rec.lostCongestion + rec.lostAmbiguous : 0;
  const cur = { t: now, quicLost, lost, repaired: rec ? rec.repaired : 0, unrepaired: rec ? rec.unrepaired : 0,
    received: rec ? rec.datagramsReceived : 0 };
  if (previous) {
    const dt = (now - previous.t) / 1000;
    // Counters restart when sessions go: a negative step is no loss.
    const rate = (k) => Math.max(0, cur[k] - previous[k]) / dt;
    row.quicLost = rate("quicLost");
    row.lossIn = rate("lost");
    row.repaired = rate("repaired");
    row.unrepaired = rate("unrepaired");
    // Datagrams that arrived (received less rebuilt) plus those lost: what was sent to us.
    const arrived = Math.max(0, cur.received - previous.received) - Math.max(0, cur.repaired - previous.repaired);
    const lostStep = Math.max(0, cur.lost - previous.lost);
    row.lossInPct = arrived + lostStep > 0 ? 100 * lostStep / (arrived + lostStep) : 0;
  }
  previous = cur;
  if (rec) {
    row.overhead = 100 * rec.overhead;
    row.peerLoss = 100 * rec.peerLoss;
    document.getElementById("recovery").textContent =
      "Loss-recovery layer: " + rec.groupParity + " repair per " + rec.groupData + " data datagrams now; " +
      "seen lost " + lost + " (random " + rec.lostRandom + ", congestion " + rec.lostCongestion +
      ", ambiguous " + rec.lostAmbiguous + "), repaired " + rec.repaired + ", not repaired " + rec.unrepaired +
      ", repair overhead " + (100 * rec.overhead).toFixed(1) + " %, loss the peer sees " + (100 * rec.peerLoss).toFixed(2) +
      " %, mean repair delay " + rec.repairDelayMs.toFixed(2) + " ms, peers " + rec.framedPeers + ".";
  } else {
    document.getElementById("recovery").textContent = "Loss-recovery layer off (--fec off): QUIC sees every loss.";
  }
  sessionHistory.push(row);
  trim(sessionHistory, now);

  const remotes = [...new Set(sessionHistory.flatMap((r) => Object.keys(r.rtt)))].slice(0, MAX_CHARTED_SESSIONS);
  chart(charts, "rtt", document.getElementById("chart-rtt"), ["time", ...remotes],
    sessionHistory.map((r) => [new Date(r.t), ...remotes.map((k) => (k in r.rtt ? r.rtt[k] : null))]));
  const lossLabels = rec ? ["time", "seen lost", "repaired", "not repaired", "lost to QUIC"] : ["time", "lost to QUIC"];
  chart(charts, "loss", document.getElementById("chart-loss"), lossLabels, sessionHistory.map((r) =>
    rec ? [new Date(r.t), r.lossIn, r.repaired, r.unrepaired, r.quicLost] : [new Date(r.t), r.quicLost]),
  { colors: rec ? ["#d9480f", "#2b8a3e", "#862e9c", "#495057"] : ["#495057"] });
  if (rec) {
    chart(charts, "overhead", document.getElementById("chart-overhead"), ["time", "repair overhead", "loss in", "loss out (peer)"],
      sessionHistory.map((r) => [new Date(r.t), r.overhead, r.lossInPct, r.peerLoss]),
      { colors: ["#1f6feb", "#d9480f", "#e67700"] });
  }
}

function renderTunnels(tunnels, now) {
  tunnels.sort((a, b) => Date.parse(a.createdAt) - Date.parse(b.createdAt));
  document.getElementById("tunnel-count").textContent = "(" + tunnels.length + ")";
  if (tunnels.length) document.getElementById("side").textContent = tunnels[0].endpoint + " endpoint";
  document.getElementById("tunnels-note").textContent = tunnels.length > MAX_CHARTED_TUNNELS
    ? "Rates charted for the " + MAX_CHARTED_TUNNELS + " oldest tunnels." : (tunnels.length ? "" : "No live tunnel.");
  const live = new Set();
  const list = document.getElementById("tunnels");
  tunnels.forEach((t, i) => {
    live.add(t.uuid);
    let card = cards.get(t.uuid);
    if (!card) {
      card = newCard(t);
      cards.set(t.uuid, card);
    }
    list.append(card.el); // keeps the cards in creation order
    fillCard(card, t);
    let rows = tunnelHistory.get(t.uuid);
    if (!rows) tunnelHistory.set(t.uuid, (rows = []));
    rows.push([new Date(now), 8 * t.rateUpBytesPerSecond, 8 * t.rateDownBytesPerSecond]);
    trim(rows, now, (r) => r[0].getTime());
    if (i < MAX_CHARTED_TUNNELS) {
      card.chartDiv.hidden = card.chartDiv.previousElementSibling.hidden = false;
      chart(card, "g", card.chartDiv, ["time", "up", "down"], rows, {
        colors: ["#1f6feb", "#d9480f"], axes: { y: { axisLabelFormatter: fmtBits, valueFormatter: fmtBits, axisLabelWidth: 80 } },
      });
    } else {
      card.chartDiv.hidden = card.chartDiv.previousElementSibling.hidden = true;
    }
  });
  for (const [id, card] of cards) {
    if (live.has(id)) continue;
    if (card.g) card.g.chart.destroy();
    card.el.remove();
    cards.delete(id);
    tunnelHistory.delete(id);
  }
}

function newCard(t) {
  const e = el("article", "tunnel");
  e.dataset.uuid = t.uuid;
  const head = el("div", "head");
  const proto = el("span", "proto");
  const path = el("span", "path");
  const kill = el("button", "kill", "kill");
  kill.type = "button";
  kill.title = "Close this tunnel (DELETE /tunnels/" + t.uuid + ")";
  kill.addEventListener("click", async () => {
    kill.disabled = true;
    e.classList.add("closing");
    try {
      await api("DELETE", "tunnels/" + encodeURIComponent(t.uuid));
    } catch (err) {
      kill.disabled = false;
      e.classList.remove("closing");
      showError("kill " + t.uuid + ": " + err.message);
    }
  });
  head.append(proto, path, kill);
  const id = el("div", "id");
  const props = el("div", "props");
  const numbers = el("div", "numbers");
  const up = el("span", "up"), down = el("span", "down"), age = el("span", "age"), state = el("span", "state");
  numbers.append(up, down, age, state);
  const chartHead = el("div", "chart-head");
  chartHead.append(el("span", "legend"));
  const chartDiv = el("div", "chart");
  e.append(head, id, props, numbers, chartHead, chartDiv);
  return { el: e, chartDiv, fields: { proto, path, id, props, up, down, age, state } };
}

function fillCard(card, t) {
  const f = card.fields;
  const proto = t.protocol || "";
  f.proto.textContent = proto || "unknown";
  f.proto.className = "proto" + (proto && proto !== "unknown" ? "" : " none");
  f.path.textContent = (t.clientAppAddr ? t.clientAppAddr + " → " : "") + t.serverAppAddr;
  f.id.textContent = "via " + t.remoteEndpointAddr + " · stream " + t.streamId + " · " + t.uuid;
  const props = Object.entries(t.protocolProperties || {}).sort(([a], [b]) => (a < b ? -1 : 1));
  const text = props.map(([k, v]) => k + "=" + v).join("\n");
  if (f.props.dataset.text !== text) {
    f.props.dataset.text = text;
    f.props.replaceChildren(...props.map(([k, v]) => el("span", "", k + " = " + v)));
  }
  f.up.textContent = "↑ " + fmtBits(8 * t.rateUpBytesPerSecond) + " (" + fmtBytes(t.bytesUp) + ")";
  f.down.textContent = "↓ " + fmtBits(8 * t.rateDownBytesPerSecond) + " (" + fmtBytes(t.bytesDown) + ")";
  f.age.textContent = "open " + fmtAge(t.createdAt);
  f.state.textContent = t.state;
  card.el.dataset.bytesUp = t.bytesUp;
  card.el.dataset.bytesDown = t.bytesDown;
  card.el.dataset.protocol = proto;
}

document.getElementById("login").addEventListener("submit", (ev) => {
  ev.preventDefault();
  token = document.getElementById("token").value;
  sessionStorage.setItem(TOKEN_KEY, token);
  if (timer) clearTimeout(timer);
  poll();
});

poll();
