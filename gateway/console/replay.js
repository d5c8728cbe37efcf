// pubex lot replay: plays a lot's accepted bids back at 1x-100x from the gateway's
// bid history (/api/lots/{lot} and /api/lots/{lot}/bids), on the bids' server times.
// Open /static/replay.html?lot=ID.  Standalone: no framework, no chart library.

const $ = (id) => document.getElementById(id);
const tf = new Intl.DateTimeFormat("zh-CN", {
  hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false, timeZone: "Asia/Shanghai",
});
const nf = new Intl.NumberFormat("zh-CN", { maximumFractionDigits: 0 });

let bids = []; // {seq, ts_ns, bidder_code, amount_fen, bid_no}, in ledger order
let t0 = 0; // ms of server time: the first bid
let t1 = 0; // the last bid
let vt = 0; // the virtual clock (ms of server time)
let playing = false;
let lastFrame = 0;
let shown = 0;

const yuan = (fen) => `¥${nf.format(Math.floor(fen / 100))}`;

function setState(state) {
  document.body.dataset.state = state;
  $("r-play").innerHTML = state === "playing" ? "⏸ 暂停 <small>Pause</small>" : "▶ 播放 <small>Play</small>";
}

function render() {
  let n = 0;
  while (n < bids.length && bids[n].ts_ns / 1e6 <= vt) n += 1;
  if (n !== shown) {
    const body = $("r-bids");
    if (n < shown) body.replaceChildren();
    for (let i = n < shown ? 0 : shown; i < n; i += 1) {
      const b = bids[i];
      const tr = document.createElement("tr");
      for (const [text, cls] of [[b.bid_no, "r"], [tf.format(new Date(b.ts_ns / 1e6)), ""], [b.bidder_code, ""], [yuan(b.amount_fen), "r"]]) {
        const td = document.createElement("td");
        td.textContent = text;
        if (cls) td.className = cls;
        tr.append(td);
      }
      body.prepend(tr);
    }
    shown = n;
    const last = bids[n - 1];
    $("r-count").textContent = String(n);
    $("r-price").textContent = last ? yuan(last.amount_fen) : "—";
    $("r-price").dataset.priceFen = last ? String(last.amount_fen) : "";
    $("r-leader").textContent = last ? last.bidder_code : "—";
    drawChart(n);
  }
  $("r-clock").textContent = bids.length ? tf.format(new Date(vt)) : "--:--:--";
  $("r-pos").value = String(t1 > t0 ? Math.round((1000 * (vt - t0)) / (t1 - t0)) : 1000);
}

function drawChart(n) {
  const svg = $("r-chart");
  if (!bids.length) return;
  const lo = Math.min(...bids.map((b) => b.amount_fen));
  const hi = Math.max(lo + 1, ...bids.map((b) => b.amount_fen));
  const span = Math.max(1, t1 - t0);
  const x = (b) => (1000 * (b.ts_ns / 1e6 - t0)) / span;
  const y = (fen) => 270 - (260 * (fen - lo)) / (hi - lo);
  const pts = [];
  for (let i = 0; i < n; i += 1) {
    if (i) pts.push(`${x(bids[i]).toFixed(1)},${y(bids[i - 1].amount_fen).toFixed(1)}`);
    pts.push(`${x(bids[i]).toFixed(1)},${y(bids[i].amount_fen).toFixed(1)}`);
  }
  svg.innerHTML = `<polyline fill="none" stroke="#38bdf8" stroke-width="2" points="${pts.join(" ")}"/>`;
}

function frame(now) {
  if (!playing) return;
  const speed = Number($("r-speed").value) || 1;
  vt = Math.min(t1, vt + (now - lastFrame) * speed);
  lastFrame = now;
  render();
  if (vt >= t1) {
    playing = false;
    setState("done");
    return;
  }
  requestAnimationFrame(frame);
}

function play() {
  if (playing) {
    playing = false;
    setState("paused");
    return;
  }
  if (vt >= t1) {
    vt = t0;
    shown = 0;
    $("r-bids").replaceChildren();
  }
  playing = true;
  setState("playing");
  lastFrame = performance.now();
  requestAnimationFrame(frame);
}

$("r-play").addEventListener("click", play);
$("r-pos").addEventListener("input", () => {
  vt = t0 + ((t1 - t0) * Number($("r-pos").value)) / 1000;
  render();
});

async function start() {
  const lot = new URLSearchParams(location.search).get("lot") || "";
  $("r-lot").textContent = lot;
  try {
    const [info, rows] = await Promise.all([
      fetch(`/api/lots/${encodeURIComponent(lot)}`).then((r) => (r.ok ? r.json() : Promise.reject(r.status))),
      fetch(`/api/lots/${encodeURIComponent(lot)}/bids`).then((r) => (r.ok ? r.json() : Promise.reject(r.status))),
    ]);
    $("r-title").textContent = `${info.title || ""} · ${info.mechanism || ""} · ${info.status || ""}`;
    bids = rows;
  } catch (e) {
    $("r-error").hidden = false;
    $("r-error").textContent = `无法载入标的 ${lot} / cannot load lot ${lot} (${e})`;
    return;
  }
  $("r-total").textContent = String(bids.length);
  if (bids.length) {
    t0 = bids[0].ts_ns / 1e6;
    t1 = bids[bids.length - 1].ts_ns / 1e6;
  }
  vt = t0 - 1;
  render();
  setState("ready");
}

start();
