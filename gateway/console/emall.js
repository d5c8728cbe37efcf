// pubex console: the e-mall (电子卖场) view -- one order book per catalogue item.
//
// The socket (console.js) hands every conflated `book` frame to onBook(); the frames
// carry the top 10 levels a side and the latest 30 trades, so the depth ladder and the
// tape are drawn straight from the latest frame.  The price chart starts from
// /api/items/{item}/trades (every kept trade) and then appends the tape's new rows.
// Rendering is batched into one requestAnimationFrame pass, like the lots board.

const UPLOT_URL = "/static/vendor/uplot/dist/uPlot.esm.js";
const SESSION = {
  call: ["集合竞价", "Opening call"],
  open: ["连续交易", "Open"],
  halted: ["暂停交易", "Halted"],
  closed: ["已收市", "Closed"],
};
const AGGRESSOR = { buy: ["买", "Buy"], sell: ["卖", "Sell"], none: ["集合", "Call"] };

const items = new Map(); // item -> latest book frame
let current = null; // {item, history: [[ts_s, price_yuan]], lastSeq, chart, loading}
let queued = false;
let U = null;

const $ = (id) => document.getElementById(id);
const nf = new Intl.NumberFormat("zh-CN", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
const qf = new Intl.NumberFormat("zh-CN");
const tf = new Intl.DateTimeFormat("zh-CN", {
  hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false,
});
const yuan = (fen) => nf.format(fen / 100);

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

export function onBook(b) {
  const known = items.get(b.item);
  if (known && b.seq < known.seq) return;
  items.set(b.item, b);
  const tab = $("tab-emall");
  if (tab) {
    tab.hidden = false;
    $("stat-items").textContent = String(items.size);
  }
  if (current && current.item === b.item && current.history && !current.loading) {
    appendTrades(b.tape);
  }
  schedule();
}

// Rows are [seq, ts_ns, price_fen, qty, aggressor] in ledger order.  An entry's trades
// always arrive together (the views fold whole entries), so "seq above the last one
// charted" is exactly "not charted yet".
function appendTrades(rows) {
  const base = current.lastSeq;
  for (const [seq, tsNs, price] of rows) {
    if (seq <= base) continue;
    current.history.push([tsNs / 1e9, price / 100]);
    current.lastSeq = seq;
  }
}

function schedule() {
  if (queued) return;
  queued = true;
  requestAnimationFrame(() => {
    queued = false;
    render();
  });
}

export function showEmall(on) {
  document.body.dataset.view = on ? "emall" : "lots";
  if (on && !current && items.size) select([...items.keys()].sort()[0]);
  schedule();
}

async function select(item) {
  const sel = { item, history: null, lastSeq: 0, chart: null, loading: true };
  current = sel;
  schedule();
  try {
    const rows = await (await fetch(`/api/items/${encodeURIComponent(item)}/trades`)).json();
    if (current !== sel) return;
    sel.history = [];
    appendTrades(rows);
  } catch {
    sel.history = [];
  }
  sel.loading = false;
  const b = items.get(item);
  if (b) appendTrades(b.tape);
  await drawChart(sel);
  schedule();
}

function render() {
  if (document.body.dataset.view !== "emall") return;
  renderList();
  const b = current && items.get(current.item);
  if (!b) return;
  $("e-item").textContent = b.item;
  $("e-title").textContent = b.title;
  const [zh, en] = SESSION[b.session] || [b.session, b.session];
  const badge = $("e-session");
  badge.replaceChildren(document.createTextNode(`${zh} `), el("small", "", en));
  badge.className = `badge se-${b.session}`;
  $("e-last").textContent = b.last_price_fen ? `${yuan(b.last_price_fen)} 元` : "—";
  $("e-ref").textContent = b.reference_fen ? `${yuan(b.reference_fen)} 元` : "—";
  $("e-band").textContent = b.band_fen ? `± ${yuan(b.band_fen)} 元` : "—";
  $("e-volume").textContent = qf.format(b.volume);
  $("e-trades").textContent = qf.format(b.trades);
  renderLadder(b);
  renderTape(b);
  if (current.chart && current.history) current.chart.setData(chartData(current));
}

function renderList() {
  const list = $("e-list");
  const ids = [...items.keys()].sort();
  if (list.childElementCount !== ids.length) {
    list.replaceChildren(
      ...ids.map((id) => {
        const li = el("li", "e-chip");
        li.dataset.testid = `item-${id}`;
        li.tabIndex = 0;
        li.addEventListener("click", () => select(id));
        li.append(el("b", "", id), el("span", "e-chip-title"), el("span", "num e-chip-px"));
        return li;
      }),
    );
  }
  ids.forEach((id, n) => {
    const li = list.children[n];
    const b = items.get(id);
    li.classList.toggle("on", current?.item === id);
    li.dataset.session = b.session;
    li.children[1].textContent = b.title;
    li.children[2].textContent = b.last_price_fen ? yuan(b.last_price_fen) : "—";
  });
}

function renderLadder(b) {
  const body = $("e-ladder");
  const max = Math.max(1, ...b.bids.map((l) => l[1]), ...b.asks.map((l) => l[1]));
  const row = (side, [price, qty]) => {
    const tr = el("tr", side);
    tr.dataset.testid = `level-${side}-${price}`;
    const bar = el("td", "bar-cell");
    const fill = el("span", "bar");
    fill.style.width = `${Math.round((100 * qty) / max)}%`;
    bar.append(fill);
    tr.append(
      el("td", "side-label", side === "ask" ? "卖 Ask" : "买 Bid"),
      el("td", "num px r", yuan(price)),
      el("td", "num r", qf.format(qty)),
      bar,
    );
    return tr;
  };
  const asks = [...b.asks].reverse().map((l) => row("ask", l)); // best ask next to the spread
  const spread = el("tr", "spread");
  const bestBid = b.bids[0]?.[0];
  const bestAsk = b.asks[0]?.[0];
  const gap = bestBid && bestAsk ? `价差 Spread ${yuan(bestAsk - bestBid)}` : "—";
  const td = el("td", "r", gap);
  td.colSpan = 4;
  spread.append(td);
  body.replaceChildren(...asks, spread, ...b.bids.map((l) => row("bid", l)));
}

function renderTape(b) {
  const body = $("e-tape");
  body.replaceChildren(
    ...[...b.tape].reverse().map(([seq, tsNs, price, qty, aggr]) => {
      const tr = el("tr", `ag-${aggr}`);
      const [zh, en] = AGGRESSOR[aggr] || [aggr, aggr];
      tr.append(
        el("td", "num", tf.format(new Date(tsNs / 1e6))),
        el("td", "num r px", yuan(price)),
        el("td", "num r", qf.format(qty)),
        el("td", "", `${zh} ${en}`),
      );
      tr.title = `#${seq}`;
      return tr;
    }),
  );
}

function chartData(sel) {
  const xs = sel.history.map((h) => h[0]);
  const ys = sel.history.map((h) => h[1]);
  return [xs, ys];
}

async function drawChart(sel) {
  if (!U) {
    try {
      U = (await import(UPLOT_URL)).default;
    } catch {
      $("e-chart-notice").hidden = false;
      return;
    }
  }
  if (current !== sel) return;
  const box = $("e-chart");
  box.replaceChildren();
  const axis = {
    stroke: "#9fb0c8",
    grid: { stroke: "rgba(148, 163, 184, .12)", width: 1 },
    ticks: { stroke: "rgba(148, 163, 184, .25)", width: 1 },
    font: "13px 'Noto Sans CJK SC', 'DejaVu Sans', sans-serif",
  };
  sel.chart = new U(
    {
      width: Math.max(300, box.clientWidth),
      height: Math.max(160, box.clientHeight),
      legend: { show: false },
      scales: { x: { time: true } },
      axes: [
        { ...axis, space: 90, values: (u, vals) => vals.map((v) => tf.format(new Date(v * 1000))) },
        { ...axis, size: 90, values: (u, vals) => vals.map((v) => nf.format(v)) },
      ],
      series: [
        {},
        {
          label: "price",
          stroke: "#38bdf8",
          width: 2,
          fill: "rgba(56, 189, 248, .10)",
          paths: U.paths.stepped({ align: 1 }),
          points: { show: false },
        },
      ],
    },
    chartData(sel),
    box,
  );
}

addEventListener("resize", () => {
  if (current?.chart) {
    const box = $("e-chart");
    current.chart.setSize({ width: box.clientWidth, height: box.clientHeight });
  }
});
