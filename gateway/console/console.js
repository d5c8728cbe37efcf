// pubex live auction console: one ES module, no framework, no build step.
//
// Data flow: /config.json gives the WebSocket URL; the socket (authenticated by the
// pubex_token cookie, or a public watcher without it) subscribes to every lot ("*") and
// receives conflated `snapshot` frames (at most ~10/s per lot) and must-deliver `event`
// frames.  Frames only update an in-memory model and mark lots dirty; one
// requestAnimationFrame pass then patches the changed cells in place.  Countdowns tick
// once a second on server time (offset measured against /time, re-synced periodically).
// uPlot (installed from npm by `make console-deps`) is imported lazily; without it the
// detail panel shows a notice instead of the chart.

import { onBook, showEmall } from "./emall.js";

const UPLOT_URL = "/static/vendor/uplot/dist/uPlot.esm.js";
const WAN_FROM_FEN = 10_000_000 * 100; // lots starting at >= 1,000万元 (land-sized) show 万元
const TIME_SYNC_MS = 60_000;
const PING_MS = 20_000;
const BIDS_SHOWN = 200;

const STATUS = {
  draft: ["草稿", "Draft"],
  published: ["待开拍", "Upcoming"],
  open: ["竞价中", "Open"],
  frozen: ["已暂停", "Frozen"],
  terminated: ["已终止", "Terminated"],
  sold: ["已成交", "Sold"],
  unsold: ["流拍", "Unsold"],
};
const PHASE = {
  pending: ["未开始", "Pending"],
  bidding: ["自由竞价", "Bidding"],
  main: ["自由竞价", "Bidding"],
  listing: ["挂牌期", "Listing"],
  quote_frozen: ["报价截止", "Quotes closed"],
  wait: ["等待限时竞价", "Waiting"],
  timed: ["限时竞价", "Timed bidding"],
  descending: ["降价中", "Clock falling"],
  submission: ["投标中（密封）", "Sealed submission"],
  reveal: ["解密中", "Decryption window"],
  draw: ["待抽签", "Awaiting draw seed"],
  evaluation: ["评审中", "Committee scoring"],
  quoting: ["报价中", "Quoting"],
  confirming: ["待确认", "Awaiting confirmation"],
  revival: ["复活确认", "Revival offers"],
  regions: ["选择供应地区", "Choosing regions"],
  sale: ["变卖期", "Sale window"],
};
const SETTLEMENT = {
  awaiting_qualification: ["资格后审中", "Post-qualification"],
  awaiting_payment: ["待付款", "Awaiting payment"],
  paid: ["已付款", "Paid"],
  defaulted: ["悔拍（保证金没收）", "Defaulted, deposit forfeited"],
  voided: ["成交无效", "Award voided"],
};
const ACTIONS = {
  register_bidder: ["登记竞买人", "Register bidder"],
  confirm_deposit: ["确认保证金", "Confirm deposit"],
  freeze_lot: ["暂停", "Freeze"],
  resume_lot: ["恢复", "Resume"],
  terminate_lot: ["终止", "Terminate"],
};
const FINAL = new Set(["sold", "unsold", "terminated"]);
const COLUMNS = [
  ["标的", "Lot"],
  ["状态", "Status"],
  ["当前价", "Price", "r"],
  ["剩余 / 截止", "Left / ends", "r"],
  ["竞买人", "Bidders", "r"],
  ["出价", "Bids", "r"],
  ["末次出价", "Last bid", "r"],
  ["延时", "Ext.", "r"],
];

// ------------------------------------------------------------------ model
const lots = new Map(); // lot id -> snapshot-shaped object (+ remaining_ns when frozen)
const rows = new Map(); // lot id -> {el, cells, shown: {...}}
const dirty = new Set();
let order = []; // lot ids in board order
let layoutNeeded = true;
let flushQueued = false;
let selected = null; // {lot, bids: [], loading, buffer, chart}
let role = "watcher";
let ws = null;
let wsUrl = "";
let backoffMs = 500;
let offsetMs = 0; // server clock - local clock
let bestRtt = Infinity;
let clientSeq = Date.now(); // increasing across reloads (the server keeps the high mark)
// This tab's client session: the server numbers client_seq per (staff id, session),
// so another tab, `pubex admin` or a script of the same staff id never makes this
// tab's commands stale.  Kept for the tab's life (reloads and reconnects reuse it).
const clientSession = tabSession();
const pending = new Map(); // client_seq -> {type, lot, reason, retried, li}
let uPlot = null;
let uPlotFailed = false;

const $ = (id) => document.getElementById(id);
const serverNowMs = () => Date.now() + offsetMs;

// ------------------------------------------------------------ formatting
const nf0 = new Intl.NumberFormat("zh-CN", { maximumFractionDigits: 0 });
const nf2 = new Intl.NumberFormat("zh-CN", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
const tf = new Intl.DateTimeFormat("zh-CN", {
  hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false,
});
const df = new Intl.DateTimeFormat("zh-CN", { month: "2-digit", day: "2-digit" });

const useWan = (lot) => lot.start_price_fen >= WAN_FROM_FEN;
function money(fen, wan) {
  if (wan) return [nf2.format(fen / 1e6), "万元"];
  return [fen % 100 ? nf2.format(fen / 100) : nf0.format(fen / 100), "元"];
}
function moneyText(fen, wan) {
  const [a, u] = money(fen, wan);
  return `${a} ${u}`;
}
function clockText(ns) {
  return ns ? tf.format(new Date(ns / 1e6)) : "—";
}
function endText(ns) {
  if (!ns) return "—";
  const d = new Date(ns / 1e6);
  const today = new Date(serverNowMs()).toDateString() === d.toDateString();
  return today ? tf.format(d) : `${df.format(d)} ${tf.format(d)}`;
}
function duration(ms) {
  const s = Math.max(0, Math.floor(ms / 1000));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const ss = String(s % 60).padStart(2, "0");
  if (h >= 48) return `${Math.floor(h / 24)}天 ${h % 24}时`;
  return h ? `${h}:${String(m).padStart(2, "0")}:${ss}` : `${String(m).padStart(2, "0")}:${ss}`;
}
// [text, css class] of a lot's countdown at server time nowMs.
function countdown(lot, nowMs) {
  const s = lot.status;
  if (s === "open") {
    const left = lot.end_ns / 1e6 - nowMs;
    const cls = left < 60_000 ? "urgent" : left < 300_000 ? "soon" : "";
    return [duration(left), cls];
  }
  if (s === "published") return [`${duration(lot.start_ns / 1e6 - nowMs)}`, "upcoming"];
  if (s === "frozen") {
    return [lot.remaining_ns ? duration(lot.remaining_ns / 1e6) : "--:--", "paused"];
  }
  if (FINAL.has(s)) return ["已结束", "closed"];
  return ["—", "closed"];
}
function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}
function bilingual(tag, cls, [zh, en]) {
  const e = el(tag, cls, zh);
  e.append(el("small", "", en));
  return e;
}
function setText(e, text) {
  if (e.textContent !== text) e.textContent = text;
}
function flash(e, color = "rgba(255, 209, 102, .55)") {
  e.animate?.([{ backgroundColor: color }, { backgroundColor: "transparent" }], {
    duration: 1400, easing: "ease-out",
  });
}

// ---------------------------------------------------------------- the board
function makeRow(id) {
  const row = el("div", "row");
  row.dataset.lot = id;
  row.setAttribute("data-testid", `lot-row-${id}`);
  row.tabIndex = 0;
  const lotCell = el("div", "c c-lot");
  const name = el("b", "", id);
  const title = el("small", "");
  lotCell.append(name, title);
  const statusCell = el("div", "c c-status");
  const badge = el("span", "badge");
  badge.setAttribute("data-testid", `status-${id}`);
  statusCell.append(badge);
  const price = el("div", "c c-price num r");
  price.setAttribute("data-testid", `price-${id}`);
  const amt = el("span", "amt");
  const unit = el("span", "unit");
  price.append(amt, unit);
  const cd = el("div", "c c-cd num r");
  const cdText = el("b", "");
  cdText.setAttribute("data-testid", `countdown-${id}`);
  const ends = el("small", "");
  ends.setAttribute("data-testid", `ends-${id}`);
  cd.append(cdText, ends);
  const bidders = el("div", "c num r");
  bidders.setAttribute("data-testid", `bidders-${id}`);
  const bidCount = el("div", "c num r");
  bidCount.setAttribute("data-testid", `bids-${id}`);
  const last = el("div", "c num r muted");
  last.setAttribute("data-testid", `lastbid-${id}`);
  const ext = el("div", "c num r");
  ext.setAttribute("data-testid", `ext-${id}`);
  row.append(lotCell, statusCell, price, cd, bidders, bidCount, last, ext);
  row.addEventListener("click", () => select(id));
  row.addEventListener("keydown", (e) => { if (e.key === "Enter") select(id); });
  return {
    el: row, title, badge, price, amt, unit, cd, cdText, ends, bidders, bidCount, last, ext,
    shown: {},
  };
}

function group(lot) {
  if (lot.status === "open" || lot.status === "frozen") return 0;
  if (lot.status === "published") return 1;
  if (FINAL.has(lot.status)) return 3;
  return 2;
}

function updateRow(id) {
  const lot = lots.get(id);
  let r = rows.get(id);
  if (!r) {
    r = makeRow(id);
    rows.set(id, r);
    $("board").append(r.el);
    layoutNeeded = true;
  }
  const was = r.shown;
  const wan = useWan(lot);
  if (was.title !== lot.title) {
    setText(r.title, lot.title);
    r.el.title = `${id} · ${lot.title}`;
  }
  if (was.status !== lot.status) {
    const [zh, en] = STATUS[lot.status] || [lot.status, lot.status];
    r.badge.className = `badge st-${lot.status}`;
    r.badge.textContent = zh;
    r.badge.append(el("small", "", en));
    r.el.dataset.status = lot.status;
    if (was.status !== undefined) flash(r.el, "rgba(56, 189, 248, .35)");
    if (was.group !== group(lot)) layoutNeeded = true;
  }
  if (was.price_fen !== lot.price_fen || was.bid_count !== lot.bid_count) {
    const fen = lot.bid_count ? lot.price_fen : lot.start_price_fen;
    const [a, u] = money(fen, wan);
    setText(r.amt, a);
    setText(r.unit, u);
    r.price.dataset.priceFen = String(lot.price_fen);
    r.price.classList.toggle("start", !lot.bid_count);
    r.price.title = lot.bid_count ? `当前价 Current: ${a} ${u}` : `起拍价 Start: ${a} ${u}`;
    if (was.price_fen !== undefined && lot.bid_count) flash(r.price);
  }
  if (was.end_ns !== lot.end_ns || was.start_ns !== lot.start_ns || was.status !== lot.status) {
    const target = lot.status === "published" ? lot.start_ns : lot.end_ns;
    setText(r.ends, `${lot.status === "published" ? "开始" : "截止"} ${clockText(target)}`);
    r.ends.dataset.endNs = String(lot.end_ns);
    r.cdText.dataset.endNs = String(lot.end_ns);
    if (was.end_ns !== undefined && lot.end_ns > was.end_ns) flash(r.cd, "rgba(167, 139, 250, .5)");
    paintCountdown(lot, r, serverNowMs());
  }
  setText(r.bidders, String(lot.bidders));
  setText(r.bidCount, String(lot.bid_count));
  setText(r.last, lot.last_bid_ns ? clockText(lot.last_bid_ns) : "—");
  setText(r.ext, lot.extensions ? `+${lot.extensions}` : "0");
  r.ext.classList.toggle("hot", lot.extensions > 0);
  r.shown = {
    title: lot.title, status: lot.status, group: group(lot), price_fen: lot.price_fen,
    bid_count: lot.bid_count, end_ns: lot.end_ns, start_ns: lot.start_ns,
  };
}

function paintCountdown(lot, r, nowMs) {
  const [text, cls] = countdown(lot, nowMs);
  setText(r.cdText, text);
  const c = `c c-cd num r ${cls}`;
  if (r.cd.className !== c) r.cd.className = c;
}

// Rows sit in 1-3 side-by-side columns (grid positions), sized to fill the screen.
function layout() {
  layoutNeeded = false;
  const board = $("board");
  order = [...lots.keys()].sort((a, b) => {
    const g = group(lots.get(a)) - group(lots.get(b));
    return g || a.localeCompare(b, "en", { numeric: true });
  });
  $("board-empty").hidden = order.length > 0;
  const width = board.clientWidth;
  const cols = order.length <= 12 ? 1 : width >= 2400 ? 3 : width >= 1100 ? 2 : 1;
  const perCol = Math.max(1, Math.ceil(order.length / cols));
  const headH = 46;
  const fit = Math.floor((board.clientHeight - headH - 4) / perCol);
  board.style.setProperty("--row-h", `${Math.max(34, Math.min(56, fit))}px`);
  board.style.setProperty("--cols", String(cols));
  board.querySelectorAll(".head").forEach((h) => h.remove());
  for (let c = 0; c < cols; c++) {
    const head = el("div", "row head");
    for (const [zh, en, align] of COLUMNS) head.append(bilingual("div", `c ${align || ""}`, [zh, en]));
    head.style.gridColumn = String(c + 1);
    head.style.gridRow = "1";
    board.append(head);
  }
  order.forEach((id, i) => {
    const r = rows.get(id);
    if (!r) return;
    r.el.style.gridColumn = String(Math.floor(i / perCol) + 1);
    r.el.style.gridRow = String((i % perCol) + 2);
    r.el.classList.toggle("odd", i % perCol % 2 === 1);
  });
}

function updateStats() {
  let open = 0, frozen = 0, closed = 0, bids = 0;
  for (const lot of lots.values()) {
    if (lot.status === "open") open++;
    else if (lot.status === "frozen") frozen++;
    else if (FINAL.has(lot.status)) closed++;
    bids += lot.bid_count;
  }
  setText($("stat-lots"), String(lots.size));
  setText($("stat-open"), String(open));
  setText($("stat-frozen"), String(frozen));
  setText($("stat-closed"), String(closed));
  setText($("stat-bids"), nf0.format(bids));
}

function scheduleFlush() {
  if (flushQueued) return;
  flushQueued = true;
  requestAnimationFrame(flush);
}

function flush() {
  flushQueued = false;
  for (const id of dirty) {
    updateRow(id);
    if (selected && selected.lot === id) updateDetail();
  }
  dirty.clear();
  if (layoutNeeded) layout();
  updateStats();
}

// --------------------------------------------------------------- the detail
async function select(id) {
  if (selected?.chart) selected.chart.destroy();
  for (const r of rows.values()) r.el.classList.remove("selected");
  rows.get(id)?.el.classList.add("selected");
  selected = { lot: id, bids: [], loading: true, buffer: [], chart: null };
  $("detail-empty").hidden = true;
  $("detail-body").hidden = false;
  $("bid-list").replaceChildren();
  $("d-replay").href = `/static/replay.html?lot=${encodeURIComponent(id)}`;
  updateDetail();
  await loadBids();
}

async function loadBids() {
  const sel = selected;
  if (!sel) return;
  sel.loading = true;
  sel.buffer = [];
  try {
    const res = await fetch(`/api/lots/${encodeURIComponent(sel.lot)}/bids`);
    const data = res.ok ? await res.json() : [];
    if (selected !== sel) return;
    sel.bids = data;
  } catch {
    if (selected !== sel) return;
  }
  sel.loading = false;
  const last = sel.bids.length ? sel.bids[sel.bids.length - 1].seq : 0;
  for (const b of sel.buffer) if (b.seq > last) sel.bids.push(b);
  sel.buffer = [];
  renderBidList();
  await drawChart();
}

function bidRow(b, wan) {
  const tr = el("tr");
  tr.append(
    el("td", "num r", String(b.bid_no)),
    el("td", "num", clockText(b.ts_ns)),
    el("td", "code", b.bidder_code),
    el("td", "num r amt", moneyText(b.amount_fen, wan)),
  );
  return tr;
}

function renderBidList() {
  const lot = lots.get(selected.lot);
  const wan = lot ? useWan(lot) : false;
  const rowsEl = selected.bids.slice(-BIDS_SHOWN).reverse().map((b) => bidRow(b, wan));
  if (!rowsEl.length) {
    const tr = el("tr", "muted");
    const td = el("td", "", "暂无出价 · No bids yet");
    td.colSpan = 4;
    tr.append(td);
    rowsEl.push(tr);
  }
  $("bid-list").replaceChildren(...rowsEl);
}

function addBid(b) {
  if (!selected) return;
  if (selected.loading) {
    selected.buffer.push(b);
    return;
  }
  const bids = selected.bids;
  if (bids.length && bids[bids.length - 1].seq >= b.seq) return;
  bids.push(b);
  const lot = lots.get(selected.lot);
  const list = $("bid-list");
  if (bids.length === 1) list.replaceChildren();
  const tr = bidRow(b, lot ? useWan(lot) : false);
  list.prepend(tr);
  flash(tr);
  while (list.children.length > BIDS_SHOWN) list.lastChild.remove();
  updateChart();
}

function updateDetail() {
  if (!selected) return;
  const lot = lots.get(selected.lot);
  if (!lot) return;
  const wan = useWan(lot);
  setText($("d-lot"), lot.lot);
  setText($("d-title"), lot.title);
  const badge = $("d-status");
  const [zh, en] = STATUS[lot.status] || [lot.status, lot.status];
  badge.className = `badge st-${lot.status}`;
  badge.textContent = zh;
  badge.append(el("small", "", en));
  const fen = lot.bid_count ? lot.price_fen : lot.start_price_fen;
  const [a, u] = money(fen, wan);
  const price = $("d-price");
  if (price.dataset.fen !== String(fen)) {
    price.textContent = a;
    price.append(el("span", "unit", u));
    price.dataset.fen = String(fen);
    price.classList.toggle("start", !lot.bid_count);
    flash(price);
  }
  const [pzh, pen] = PHASE[lot.phase] || [lot.phase, lot.phase];
  setText($("d-phase"), `${pzh} ${pen}`);
  const end = $("d-end");
  setText(end, endText(lot.end_ns));
  end.dataset.endNs = String(lot.end_ns);
  setText($("d-ext"), String(lot.extensions));
  setText($("d-leader"), lot.leader_code || "—");
  setText($("d-start"), moneyText(lot.start_price_fen, wan));
  setText($("d-inc"), moneyText(lot.increment_fen, wan));
  setText($("d-bidders"), String(lot.bidders));
  setText($("d-reserve"), lot.has_reserve ? "有（保密）Yes, sealed" : "无 None");
  renderRanking(lot, wan);
  tickDetail(serverNowMs());
  $("btn-freeze").disabled = !(lot.status === "open" || lot.status === "published");
  $("btn-resume").disabled = lot.status !== "frozen";
  $("btn-terminate").disabled = FINAL.has(lot.status) || lot.status === "draft";
}

// Sealed, reverse and procurement lots: only a count until the opening, then the
// published ranking (opening record, scores, VBP winners, shares) and settlement.
function renderRanking(lot, wan) {
  const box = $("d-ranking");
  if (!box) return;
  const rows = lot.ranking || [];
  const settle = SETTLEMENT[lot.settlement];
  box.hidden = !rows.length && !settle;
  const key = JSON.stringify([rows, lot.settlement]);
  if (box.dataset.key === key) return;
  box.dataset.key = key;
  const body = $("d-ranking-rows");
  body.replaceChildren();
  rows.forEach(([code, amount, note], i) => {
    const tr = el("tr");
    tr.append(el("td", "num", String(i + 1)), el("td", "num", code));
    tr.append(el("td", "num r", lot.mechanism === "vbp" ? String(amount) : moneyText(amount, wan)));
    tr.append(el("td", "", note));
    body.append(tr);
  });
  setText($("d-settlement"), settle ? `${settle[0]} ${settle[1]}` : "");
}

function tickDetail(nowMs) {
  if (!selected) return;
  const lot = lots.get(selected.lot);
  if (!lot) return;
  const [text, cls] = countdown(lot, nowMs);
  const cd = $("d-countdown");
  setText(cd, text);
  cd.className = `num ${cls}`;
}

// ------------------------------------------------------------------ chart
async function loadUPlot() {
  if (uPlot || uPlotFailed) return uPlot;
  try {
    uPlot = (await import(UPLOT_URL)).default;
  } catch (e) {
    uPlotFailed = true;
    console.warn("uPlot unavailable:", e);
  }
  return uPlot;
}

function chartData() {
  const lot = lots.get(selected.lot);
  const div = lot && useWan(lot) ? 1e6 : 100;
  const xs = [];
  const ys = [];
  if (lot && !selected.bids.length) {
    xs.push((lot.start_ns || lot.end_ns) / 1e9);
    ys.push(lot.start_price_fen / div);
  }
  for (const b of selected.bids) {
    xs.push(b.ts_ns / 1e9);
    ys.push(b.amount_fen / div);
  }
  // Carry the current price up to now (or the close) so the step line reaches "now".
  if (lot && xs.length) {
    let t = serverNowMs() / 1000;
    if (FINAL.has(lot.status) && lot.end_ns) t = Math.min(t, lot.end_ns / 1e9);
    if (t > xs[xs.length - 1]) {
      xs.push(t);
      ys.push(ys[ys.length - 1]);
    }
  }
  return [xs, ys];
}

async function drawChart() {
  const sel = selected;
  const box = $("chart");
  const U = await loadUPlot();
  if (selected !== sel) return;
  if (!U) {
    $("chart-notice").hidden = false;
    box.hidden = true;
    return;
  }
  const lot = lots.get(sel.lot);
  const wan = lot ? useWan(lot) : false;
  const unit = wan ? "万元" : "元";
  const axis = {
    stroke: "#9fb0c8",
    grid: { stroke: "rgba(148, 163, 184, .12)", width: 1 },
    ticks: { stroke: "rgba(148, 163, 184, .25)", width: 1 },
    font: "13px 'Noto Sans CJK SC', 'DejaVu Sans', sans-serif",
  };
  box.replaceChildren();
  sel.chart = new U(
    {
      width: Math.max(300, box.clientWidth),
      height: Math.max(160, box.clientHeight),
      legend: { show: false },
      cursor: { drag: { x: false, y: false } },
      scales: { x: { time: true } },
      axes: [
        { ...axis, space: 90, values: (u, vals) => vals.map((v) => tf.format(new Date(v * 1000))) },
        {
          ...axis,
          size: 92,
          label: `价格 Price (${unit})`,
          labelFont: "12px 'Noto Sans CJK SC', 'DejaVu Sans', sans-serif",
          labelSize: 18,
          values: (u, vals) => vals.map((v) => (wan ? nf2 : nf0).format(v)),
        },
      ],
      series: [
        {},
        {
          label: "price",
          stroke: "#fbbf24",
          width: 2.5,
          fill: "rgba(251, 191, 36, .12)",
          paths: U.paths.stepped({ align: 1 }),
          points: { show: true, size: 6, fill: "#fbbf24", stroke: "#fbbf24" },
        },
      ],
    },
    chartData(),
    box,
  );
}

function updateChart() {
  if (selected?.chart) selected.chart.setData(chartData());
}

addEventListener("resize", () => {
  layoutNeeded = true;
  scheduleFlush();
  if (selected?.chart) {
    const box = $("chart");
    selected.chart.setSize({ width: box.clientWidth, height: box.clientHeight });
  }
});

// ------------------------------------------------------------ the clock tick
function tick() {
  const now = serverNowMs();
  setText($("clock"), tf.format(new Date(now)));
  for (const [id, r] of rows) {
    const lot = lots.get(id);
    if (lot) paintCountdown(lot, r, now);
  }
  tickDetail(now);
  updateChart(); // the step line follows "now"
  setTimeout(tick, 1000 - (serverNowMs() % 1000) + 5); // on the server's second boundary
}

async function syncTime() {
  for (let i = 0; i < 3; i++) {
    try {
      const t0 = performance.now();
      const res = await fetch("/time", { cache: "no-store" });
      const body = await res.json();
      const t1 = performance.now();
      const rtt = t1 - t0;
      if (rtt <= bestRtt * 1.5 || i === 0) {
        bestRtt = Math.min(bestRtt, rtt);
        offsetMs = body.server_time_ns / 1e6 - (Date.now() - rtt / 2);
      }
    } catch {
      /* keep the last offset */
    }
  }
  bestRtt = Infinity; // re-measure from scratch next time (network paths change)
  $("clock-note").textContent = "服务器时间 Server time · 已校时 synced";
}

// ------------------------------------------------------------- the socket
function tabSession() {
  const name = "pubex_session";
  let s = null;
  try {
    s = sessionStorage.getItem(name);
  } catch {
    // storage blocked: a session for this page's life
  }
  if (!s || !/^[A-Za-z0-9._-]{1,64}$/.test(s)) {
    const bytes = crypto.getRandomValues(new Uint8Array(8));
    s = `tab-${Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("")}`;
    try {
      sessionStorage.setItem(name, s);
    } catch {
      // as above
    }
  }
  return s;
}

function setConn(cls, text) {
  const c = $("conn");
  c.className = `pill conn ${cls}`;
  c.textContent = text;
}

function connect() {
  setConn("conn-down", "连接中 Connecting…");
  let sock;
  try {
    const u = new URL(wsUrl);
    u.searchParams.set("session", clientSession);
    sock = new WebSocket(u.toString());
  } catch (e) {
    retry();
    return;
  }
  ws = sock;
  sock.onmessage = (m) => {
    let frame;
    try {
      frame = JSON.parse(m.data);
    } catch {
      return;
    }
    onFrame(frame);
  };
  sock.onclose = () => {
    if (ws !== sock) return;
    ws = null;
    for (const p of pending.values()) {
      p.li.className = "err";
      p.li.lastChild.textContent = `? ${p.label}: 连接中断，结果未知 connection lost, outcome unknown`;
    }
    pending.clear();
    retry();
  };
  sock.onerror = () => {};
}

function retry() {
  const wait = Math.min(15_000, backoffMs) * (0.75 + Math.random() * 0.5);
  backoffMs = Math.min(15_000, backoffMs * 2);
  setConn("conn-down", `已断开 Reconnecting in ${Math.ceil(wait / 1000)}s`);
  setTimeout(connect, wait);
}

function send(obj) {
  if (!ws || ws.readyState !== WebSocket.OPEN) return false;
  ws.send(JSON.stringify(obj));
  return true;
}

setInterval(() => send({ type: "ping", t: Date.now() }), PING_MS);

function onFrame(f) {
  switch (f.type) {
    case "snapshot": return onSnapshot(f);
    case "book": return onBook(f); // e-mall items (emall.js)
    case "event": return onEvent(f);
    case "hello": return onHello(f);
    case "ack": return onReply(f, true);
    case "error": return onReply(f, false);
    case "pong": return onPong(f);
    default: return undefined;
  }
}

function onHello(f) {
  backoffMs = 500;
  role = f.role;
  // continue past what this session already used (a duplicated tab shares it)
  clientSeq = Math.max(clientSeq, Number(f.client_seq) || 0);
  const pill = $("role");
  const names = { staff: "工作人员 Staff", supervisor: "监管 Supervisor", bidder: "竞买人 Bidder" };
  pill.textContent = `${names[role] || "观众 Watcher"}${f.identity ? ` · ${f.identity}` : ""}`;
  pill.className = `pill role role-${role}`;
  $("staff").hidden = role !== "staff";
  const official = role === "staff" || role === "supervisor";
  $("login").hidden = official;
  $("logout").hidden = !official;
  if (official) connectAlerts();
  setConn("conn-up", "实时 Live");
  send({ type: "subscribe", lots: ["*"] });
  if (selected) loadBids(); // catch up on events missed while disconnected
}

function onSnapshot(s) {
  const known = lots.get(s.lot);
  if (known && s.seq < known.seq) return; // an event already moved past it; a newer one follows
  if (known && known.status === "frozen" && s.status === "frozen") s.remaining_ns = known.remaining_ns;
  lots.set(s.lot, s);
  dirty.add(s.lot);
  scheduleFlush();
}

function onEvent(f) {
  const lot = lots.get(f.lot);
  const ev = f.event;
  if (ev.type === "bid_accepted") {
    if (lot && f.seq >= lot.seq) {
      Object.assign(lot, {
        price_fen: ev.amount_fen, leader_code: ev.bidder_code, bid_count: ev.bid_no,
        last_bid_ns: f.ts_ns, seq: f.seq,
      });
    }
    if (selected && selected.lot === f.lot) {
      addBid({
        seq: f.seq, ts_ns: f.ts_ns, bidder_code: ev.bidder_code, amount_fen: ev.amount_fen,
        bid_no: ev.bid_no,
      });
    }
  } else if (ev.type === "lot_extended" && lot && f.seq >= lot.seq) {
    lot.end_ns = ev.end_ns;
    lot.seq = f.seq;
  } else if (ev.type === "lot_frozen" && lot) {
    lot.remaining_ns = ev.remaining_ns;
    if (f.seq >= lot.seq) Object.assign(lot, { status: "frozen", seq: f.seq });
  } else if (!lot) {
    return; // a snapshot introduces the lot
  }
  if (lot) {
    dirty.add(f.lot);
    scheduleFlush();
  }
}

function onPong(f) {
  const rtt = Date.now() - f.t;
  if (rtt >= 0 && rtt < 250) {
    const sample = f.server_time_ns / 1e6 - (f.t + rtt / 2);
    offsetMs = offsetMs * 0.8 + sample * 0.2; // smooth between /time syncs
  }
}

// ------------------------------------------------------------ staff commands
function logLine(cls, text) {
  const list = $("oplog");
  list.querySelector(".muted")?.remove();
  const li = el("li", cls);
  li.append(el("time", "num", tf.format(new Date(serverNowMs()))), el("span", "", text));
  list.prepend(li);
  while (list.children.length > 8) list.lastChild.remove();
  return li;
}

// `fields` are the frame's own (a reason for lot actions; bidder and amount for the
// registry's); `note` is what the log line says about it.
function staffCommand(type, lot, fields, note, li = null) {
  const seq = ++clientSeq;
  const [zh, en] = ACTIONS[type];
  const label = `${zh} ${en} ${lot}`;
  if (!send({ type, client_seq: seq, lot, ...fields })) {
    logLine("err", `✗ ${label}: 未连接 not connected`);
    return;
  }
  pending.set(seq, {
    type, lot, fields, note, label, retried: li !== null, li: li || logLine("wait", `… ${label} — ${note}`),
  });
}

function onReply(f, ok) {
  const p = pending.get(f.client_seq);
  if (!p) {
    if (!ok) logLine("err", `✗ ${f.name}: ${f.message || ""}`);
    return;
  }
  pending.delete(f.client_seq);
  if (!ok && f.name === "client_seq_stale" && !p.retried) {
    // Another client in this session (a duplicated tab) used higher numbers: jump
    // past them, once.
    clientSeq = Math.max(clientSeq, Number.parseInt(f.message, 10) || 0);
    staffCommand(p.type, p.lot, p.fields, p.note, p.li);
    return;
  }
  const li = p.li;
  li.className = ok ? "ok" : "err";
  li.lastChild.textContent = ok
    ? `✓ ${p.label} — ${p.note} · 已记录 ledger #${f.seq}`
    : `✗ ${p.label}: ${f.name}${f.message ? ` (${f.message})` : ""}`;
  flash(li, ok ? "rgba(34, 197, 94, .4)" : "rgba(239, 68, 68, .45)");
}

function askReason(type) {
  if (!selected) return;
  const [zh, en] = ACTIONS[type];
  const lot = selected.lot;
  const reason = prompt(`${zh}标的 ${lot} 的原因 / Reason to ${en.toLowerCase()} lot ${lot}:`, "");
  if (reason === null) return;
  const text = reason.trim();
  if (!text) {
    logLine("err", `✗ ${zh} ${en} ${lot}: 需要填写原因 a reason is required`);
    return;
  }
  staffCommand(type, lot, { reason: text }, text);
}

// Registry actions from the console (issue 6): register a bidder for the selected lot,
// confirm its deposit -- both ledgered commands, so its next bid passes the gate.
function registryCommand(type) {
  if (!selected) return;
  const bidder = $("reg-bidder").value.trim();
  if (!bidder) {
    logLine("err", "✗ 需要竞买人编号 a bidder id is required");
    return;
  }
  if (type === "register_bidder") {
    staffCommand(type, selected.lot, { bidder }, bidder);
    return;
  }
  const yuan = Number.parseFloat($("reg-amount").value || "0");
  if (!Number.isFinite(yuan) || yuan < 0) {
    logLine("err", "✗ 保证金金额无效 invalid deposit amount");
    return;
  }
  const amount_fen = Math.round(yuan * 100);
  staffCommand(type, selected.lot, { bidder, amount_fen }, `${bidder} ${moneyText(amount_fen, false)}`);
}

$("tab-emall").addEventListener("click", () => showEmall(document.body.dataset.view !== "emall"));
$("btn-freeze").addEventListener("click", () => askReason("freeze_lot"));
$("btn-resume").addEventListener("click", () => askReason("resume_lot"));
$("btn-terminate").addEventListener("click", () => askReason("terminate_lot"));
$("btn-register").addEventListener("click", () => registryCommand("register_bidder"));
$("btn-deposit").addEventListener("click", () => registryCommand("confirm_deposit"));

// ------------------------------------------------------ supervision alerts
// Staff and supervisors subscribe to the supervision service's feed (`supervision_url`
// in /config.json; WS /ws/alerts?since=ID, resumed after the last alert seen).  Each
// alert shows its level colour, rule, lot, evidence seqs and detail, with acknowledge /
// dismiss / escalate buttons that send ledgered `handle_alert` frames on the console's
// own socket; the feed then pushes the handling back.
const HANDLE = {
  acknowledge: ["确认", "Acknowledge"],
  dismiss: ["驳回", "Dismiss"],
  escalate: ["上报", "Escalate"],
};
const ALERTS_SHOWN = 50;
let svUrl = "";
let svSock = null;
let svSince = 0;
let svBackoffMs = 1000;
const alertItems = new Map(); // alert id -> li

function connectAlerts() {
  if (!svUrl || svSock) return;
  const u = new URL(svUrl);
  u.protocol = u.protocol === "https:" ? "wss:" : "ws:";
  if (["127.0.0.1", "localhost"].includes(u.hostname)) u.hostname = location.hostname;
  u.pathname = "/ws/alerts";
  u.search = `?since=${svSince}`;
  let sock;
  try {
    sock = new WebSocket(u.toString());
  } catch {
    return;
  }
  svSock = sock;
  sock.onmessage = (m) => {
    let f;
    try {
      f = JSON.parse(m.data);
    } catch {
      return;
    }
    if (f.type === "alert") {
      svSince = Math.max(svSince, f.alert.alert_id);
      pushAlert(f.alert);
      for (const h of f.handling || []) showHandling(f.alert.alert_id, h);
    } else if (f.type === "handling") {
      showHandling(f.alert_id, f.handling);
    } else if (f.type === "hello") {
      svBackoffMs = 1000;
    }
  };
  sock.onclose = () => {
    if (svSock !== sock) return;
    svSock = null;
    setTimeout(connectAlerts, svBackoffMs);
    svBackoffMs = Math.min(15_000, svBackoffMs * 2);
  };
  sock.onerror = () => {};
}

function handleAlert(alert, action) {
  const seq = ++clientSeq;
  const [zh, en] = HANDLE[action];
  const label = `${zh} ${en} ${alert.rule} #${alert.alert_id}`;
  const frame = { type: "handle_alert", client_seq: seq, lot: alert.lot_id, alert_key: alert.key, action, note: "" };
  if (!send(frame)) {
    logLine("err", `✗ ${label}: 未连接 not connected`);
    return;
  }
  pending.set(seq, { type: "handle_alert", label, reason: "", retried: true, li: logLine("wait", `… ${label}`) });
}

function showHandling(alertId, h) {
  const li = alertItems.get(alertId);
  if (!li) return;
  li.dataset.handled = h.action;
  const [zh, en] = HANDLE[h.action] || [h.action, ""];
  li.querySelector(".handled").textContent = `✓ ${zh} ${en} · ${h.by} #${h.seq}`;
}

// One alert of the supervision feed: {alert_id, key, rule, level, lot_id, seq, ts_ns,
// evidence, subjects, detail}.
export function pushAlert(alert) {
  const list = $("alerts");
  list.querySelector(".muted")?.remove();
  if (alertItems.has(alert.alert_id)) return;
  const li = el("li", `alert ${alert.level || "alert"}`);
  li.dataset.testid = `alert-${alert.alert_id}`;
  li.dataset.rule = alert.rule;
  const ev = alert.evidence || [];
  const evText = ev.length > 6 ? `${ev.slice(0, 6).join(", ")} …(${ev.length})` : ev.join(", ");
  const body = el("div", "alert-body");
  body.append(
    el("span", `level level-${alert.level}`, alert.level),
    el("b", "rule", alert.rule),
    el("span", "lot", alert.lot_id || "全平台 platform"),
    el("span", "detail", alert.detail || ""),
    el("small", "evidence", `证据 seq ${evText}`),
    el("small", "handled", ""),
  );
  li.append(el("time", "num", clockText(alert.ts_ns || serverNowMs() * 1e6)), body);
  if (role === "staff" || role === "supervisor") {
    const actions = el("span", "alert-actions");
    for (const action of Object.keys(HANDLE)) {
      const b = el("button", `btn mini ${action}`, HANDLE[action][0]);
      b.title = HANDLE[action][1];
      b.dataset.testid = `alert-${alert.alert_id}-${action}`;
      b.addEventListener("click", () => handleAlert(alert, action));
      actions.append(b);
    }
    body.append(actions);
  }
  alertItems.set(alert.alert_id, li);
  list.prepend(li);
  while (list.children.length > ALERTS_SHOWN) {
    const last = list.lastElementChild;
    alertItems.delete(Number(last.dataset.testid?.slice(6)));
    last.remove();
  }
}

// ------------------------------------------------------------------- login
// POST /login {"token"} sets the httponly pubex_token cookie (the token is never in a
// URL); the socket is then reopened with it.  POST /logout clears it.
async function postJson(path, body) {
  return fetch(path, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
    credentials: "same-origin",
  });
}

$("login").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const input = $("login-token");
  const err = $("login-error");
  const r = await postJson("/login", { token: input.value });
  input.value = "";
  if (r.ok) { location.reload(); return; }
  err.textContent = r.status === 429 ? "请稍后再试 Too many attempts: wait" : "令牌无效 Wrong token";
  err.hidden = false;
});

$("logout").addEventListener("click", async () => {
  await postJson("/logout", {});
  location.reload();
});

// ------------------------------------------------------------------- start
async function start() {
  try {
    const cfg = await (await fetch("/config.json", { cache: "no-store" })).json();
    wsUrl = cfg.ws_url;
    svUrl = cfg.supervision_url || "";
    offsetMs = cfg.server_time_ns / 1e6 - Date.now();
    // Reach the socket through the host this page was loaded from (cookie + origin).
    const u = new URL(wsUrl);
    if (u.hostname !== location.hostname && ["127.0.0.1", "localhost"].includes(u.hostname)) {
      u.hostname = location.hostname;
      wsUrl = u.toString();
    }
  } catch (e) {
    setConn("conn-down", "配置错误 Config error");
    setTimeout(start, 3000);
    return;
  }
  tick();
  syncTime();
  setInterval(syncTime, TIME_SYNC_MS);
  connect();
  loadUPlot().then((U) => { if (!U) $("chart-notice").hidden = false; });
}

start();
