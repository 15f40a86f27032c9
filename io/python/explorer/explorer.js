// explorer.js - the attention explorer's page script (inlined by io/python/gpt_explorer.py).
//
// The data (script#explorer-data, docs/attention.md "The explorer") holds the probe's
// tokens, the records' steps and losses, metrics.csv's curves, the generation files, and
// each attention record as a deflated blob: float16 row scales (L, H, T), then for each
// (layer, head) the causal lower triangle, row q taking q+1 bytes; value = byte/255 * scale.
// A served page (gpt_viz.py --serve) has no blobs: it fetches them from api/record and
// polls api/meta for new records. Everything else is computed here; nothing is fetched
// from anywhere else (the page's Content-Security-Policy says so too).
'use strict';
(function () {
  const D = JSON.parse(document.getElementById('explorer-data').textContent);
  const $ = (id) => document.getElementById(id);
  const SVGNS = 'http://www.w3.org/2000/svg';
  const L = D.n_layer, H = D.n_head, T = D.T, TRI = T * (T + 1) / 2;

  // ---- decoding ---------------------------------------------------------------------------

  const CMAP = hexBytes(D.cmap);  // 256 RGB triples (viridis)
  function hexBytes(s) {
    const out = new Uint8Array(s.length / 2);
    for (let i = 0; i < out.length; i++) out[i] = parseInt(s.substr(2 * i, 2), 16);
    return out;
  }
  // the PNGs' square-root scale: weak attention stays visible next to strong
  function cidx(v) { return v <= 0 ? 0 : v >= 1 ? 255 : Math.round(Math.sqrt(v) * 255); }
  function rgb(v) { const c = 3 * cidx(v); return [CMAP[c], CMAP[c + 1], CMAP[c + 2]]; }

  function b64bytes(s) {
    if (typeof Uint8Array.fromBase64 === 'function') return Uint8Array.fromBase64(s);
    const bin = atob(s), out = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out;
  }
  async function inflate(u8) {  // zlib (RFC 1950), as Python's zlib.compress writes it
    const stream = new Blob([u8]).stream().pipeThrough(new DecompressionStream('deflate'));
    return new Uint8Array(await new Response(stream).arrayBuffer());
  }
  function half(h) {  // IEEE binary16 -> number
    const s = h & 0x8000 ? -1 : 1, e = (h >> 10) & 31, m = h & 1023;
    if (e === 0) return s * m * Math.pow(2, -24);
    if (e === 31) return m ? NaN : s * Infinity;
    return s * (1 + m / 1024) * Math.pow(2, e - 15);
  }
  // n float16 scales at the start of raw, each divided by 255 (value = byte * scale)
  function scales(raw, n) {
    const dv = new DataView(raw.buffer, raw.byteOffset, raw.byteLength), out = new Float32Array(n);
    for (let i = 0; i < n; i++) out[i] = half(dv.getUint16(2 * i, true)) / 255;
    return out;
  }

  const cache = new Map();  // "version:file index" -> Promise of {s, q}
  function recordKey(r) { return (D.live ? D.live.version : 0) + ':' + D.records.index[r]; }
  function getRecord(r) {
    const key = recordKey(r);
    let p = cache.get(key);
    if (!p) {
      const i = D.records.index[r];
      p = (async () => {
        let z;
        if (D.blobs && D.blobs[i] !== undefined) z = b64bytes(D.blobs[i]);
        else {
          const resp = await fetch('api/record?i=' + i + '&v=' + recordKey(r).split(':')[0], {cache: 'no-store'});
          if (!resp.ok) throw new Error('record ' + i + ': HTTP ' + resp.status);
          z = new Uint8Array(await resp.arrayBuffer());
        }
        const raw = await inflate(z);
        return {s: scales(raw, L * H * T), q: raw.subarray(2 * L * H * T)};
      })();
      p.catch(() => cache.delete(key));
      cache.set(key, p);
    }
    return p;
  }
  // attention row of query q (keys 0..q, zeros after) for a head, or 'mean'/'max' over heads
  function headRow(rec, l, h, q, out) {
    const base = (l * H + h) * TRI + q * (q + 1) / 2, s = rec.s[(l * H + h) * T + q];
    for (let k = 0; k <= q; k++) out[k] = rec.q[base + k] * s;
    out.fill(0, q + 1);
    return out;
  }
  const tmpRow = new Float32Array(T);
  function rowOf(rec, l, head, q, out) {
    if (typeof head === 'number') return headRow(rec, l, head, q, out);
    out.fill(0);
    for (let h = 0; h < H; h++) {
      headRow(rec, l, h, q, tmpRow);
      for (let k = 0; k <= q; k++) out[k] = head === 'max' ? Math.max(out[k], tmpRow[k]) : out[k] + tmpRow[k] / H;
    }
    return out;
  }

  // generation files: scales (N, L, H), then rows (i, l, h) of W_i = P + i - context_start[i] bytes
  const genCache = new Map();
  function getGen(g) {
    let p = genCache.get(g);
    if (!p) {
      const G = D.gens[g];
      p = (async () => {
        const N = G.context_start.length, raw = G.att ? await inflate(b64bytes(G.att)) : new Uint8Array(0);
        const off = new Array(N + 1);
        off[0] = 2 * N * L * H;
        for (let i = 0; i < N; i++) off[i + 1] = off[i] + L * H * (G.n_prompt + i - G.context_start[i]);
        return {s: scales(raw, N * L * H), q: raw, off: off};
      })();
      genCache.set(g, p);
    }
    return p;
  }
  function genRow(gr, G, i, l, head) {  // -> Float32Array over the window of generated token i
    const W = G.n_prompt + i - G.context_start[i], out = new Float32Array(W);
    const hs = typeof head === 'number' ? [head] : [...Array(H).keys()];
    for (const h of hs) {
      const o = gr.off[i] + (l * H + h) * W, s = gr.s[(i * L + l) * H + h];
      for (let k = 0; k < W; k++) {
        const v = gr.q[o + k] * s;
        out[k] = head === 'max' ? Math.max(out[k], v) : typeof head === 'number' ? v : out[k] + v / H;
      }
    }
    return out;
  }

  // ---- text ---------------------------------------------------------------------------------

  // a token made visible on an axis: spaces as '·', newlines as '↵', control characters escaped
  function label(t, max) {
    let s = t.replace(/\n/g, '↵').replace(/\r/g, '␍').replace(/\t/g, '⇥').replace(/ /g, '·')
      .replace(/[\x00-\x1f\x7f]/g, (c) => '\\x' + c.charCodeAt(0).toString(16).padStart(2, '0'));
    if (max && s.length > max) s = s.slice(0, max - 1) + '…';
    return s;
  }
  function fmt(v, d) { return v === null || v === undefined || !isFinite(v) ? 'n/a' : v.toFixed(d === undefined ? 3 : d); }
  function el(tag, attrs, text) {
    const e = document.createElement(tag);
    for (const k in attrs || {}) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function svg(tag, attrs, text) {
    const e = document.createElementNS(SVGNS, tag);
    for (const k in attrs || {}) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = text;
    return e;
  }

  // ---- state and the URL hash ----------------------------------------------------------------

  const S = {view: 'train', rec: 0, layer: L - 1, head: 0, query: T - 1, token: 0, gen: 0, mode: 'att',
             follow: true, hover: null};
  const nrec = () => D.records.index.length;
  function headStr(h) { return typeof h === 'number' ? String(h) : h; }
  function parseHead(s) {
    if (s === 'mean' || s === 'max') return s;
    const n = parseInt(s, 10);
    return Number.isInteger(n) && n >= 0 && n < H ? n : null;
  }
  function nearestRecord(step) {
    let best = 0;
    D.records.step.forEach((s, r) => { if (Math.abs(s - step) < Math.abs(D.records.step[best] - step)) best = r; });
    return best;
  }
  function clampInt(s, lo, hi, dflt) {
    const n = parseInt(s, 10);
    return Number.isInteger(n) ? Math.min(hi, Math.max(lo, n)) : dflt;
  }
  const START = D.start || {};  // gpt_viz.py's --layer, --head, --step: the view without a hash
  if (Number.isInteger(START.layer)) S.layer = START.layer;
  if (Number.isInteger(START.head)) S.head = START.head;
  function readHash() {
    const p = new URLSearchParams(location.hash.replace(/^#/, ''));
    if (!p.has('step') && Number.isInteger(START.step)) p.set('step', START.step);
    const v = p.get('view');
    S.view = v === 'read' || v === 'gen' ? v : 'train';
    if (p.has('step') && nrec()) {
      S.rec = nearestRecord(parseInt(p.get('step'), 10) || 0);
      S.follow = S.rec === nrec() - 1;
    } else {
      S.rec = Math.max(0, nrec() - 1);
      S.follow = true;
    }
    if (p.has('layer')) S.layer = clampInt(p.get('layer'), 0, L - 1, S.layer);
    if (p.has('head')) { const h = parseHead(p.get('head')); if (h !== null) S.head = h; }
    if (p.has('query')) S.query = clampInt(p.get('query'), 0, T - 1, S.query);
    if (p.has('gen')) S.gen = clampInt(p.get('gen'), 0, Math.max(0, D.gens.length - 1), 0);
    if (p.has('token')) S.token = clampInt(p.get('token'), 0, Math.max(0, genLen(S.gen) - 1), 0);
    S.mode = p.get('mode') === 'loss' ? 'loss' : 'att';
  }
  function hashString() {
    const p = [['view', S.view], ['step', nrec() ? D.records.step[S.rec] : 0], ['layer', S.layer],
               ['head', headStr(S.head)], ['query', S.query], ['token', S.token]];
    if (D.gens.length > 1) p.push(['gen', S.gen]);
    if (S.mode === 'loss') p.push(['mode', 'loss']);
    return '#' + p.map((kv) => kv[0] + '=' + encodeURIComponent(kv[1])).join('&');
  }
  let lastHash = '';
  function writeHash() {
    const h = hashString();
    if (h === location.hash) { lastHash = h; return; }
    lastHash = h;
    try { history.replaceState(null, '', h); } catch (e) { location.replace(h); }
  }
  window.addEventListener('hashchange', () => {
    if (location.hash === lastHash) return;
    readHash();
    update();
  });
  function genLen(g) { return D.gens.length ? D.gens[g].context_start.length : 0; }

  // ---- controls ------------------------------------------------------------------------------

  function setView(v) { S.view = v; stopPlay(); update(); }
  function setRec(r) {
    if (!nrec()) return;
    S.rec = Math.min(nrec() - 1, Math.max(0, r));
    S.follow = S.rec === nrec() - 1;
    update();
  }
  function setQuery(q) { S.query = Math.min(T - 1, Math.max(0, q)); update(); }
  function setToken(j) { S.token = Math.min(genLen(S.gen) - 1, Math.max(0, j)); update(); }
  function select(l, h) { S.layer = l; S.head = h; update(); }

  let timer = null, playKind = null;
  function stopPlay() {
    if (timer) clearInterval(timer);
    timer = null;
    playKind = null;
    for (const id of ['step-play', 'query-play', 'token-play']) {
      $(id).classList.remove('playing');
      $(id).textContent = '▶';
    }
  }
  function play(kind) {
    if (playKind === kind) { stopPlay(); return; }
    stopPlay();
    const btn = $(kind + '-play');
    const at = {step: () => [S.rec, nrec() - 1, setRec], query: () => [S.query, T - 1, setQuery],
                token: () => [S.token, genLen(S.gen) - 1, setToken]}[kind];
    let [cur, last] = at();
    if (cur >= last) at()[2](0);  // from the start again
    playKind = kind;
    btn.classList.add('playing');
    btn.textContent = '❚❚';
    timer = setInterval(() => {
      [cur, last] = at();
      if (cur >= last) { stopPlay(); return; }
      at()[2](cur + 1);
    }, kind === 'step' ? 450 : 350);
  }

  function initControls() {
    $('run-title').textContent = D.title;
    document.title = 'attention explorer - ' + D.title;
    for (const b of document.querySelectorAll('#tabs button')) b.addEventListener('click', () => setView(b.dataset.view));
    const ls = $('layer-select'), hs = $('head-select');
    for (let l = 0; l < L; l++) ls.append(el('option', {value: l}, String(l)));
    for (let h = 0; h < H; h++) hs.append(el('option', {value: h}, String(h)));
    hs.append(el('option', {value: 'mean'}, 'mean of heads'), el('option', {value: 'max'}, 'max of heads'));
    ls.addEventListener('change', () => select(parseInt(ls.value, 10), S.head));
    hs.addEventListener('change', () => select(S.layer, parseHead(hs.value)));
    $('step-range').addEventListener('input', (e) => setRec(parseInt(e.target.value, 10)));
    $('step-prev').addEventListener('click', () => setRec(S.rec - 1));
    $('step-next').addEventListener('click', () => setRec(S.rec + 1));
    $('step-play').addEventListener('click', () => play('step'));
    $('query-prev').addEventListener('click', () => setQuery(S.query - 1));
    $('query-next').addEventListener('click', () => setQuery(S.query + 1));
    $('query-play').addEventListener('click', () => play('query'));
    $('token-prev').addEventListener('click', () => setToken(S.token - 1));
    $('token-next').addEventListener('click', () => setToken(S.token + 1));
    $('token-play').addEventListener('click', () => play('token'));
    for (const id of ['mode-att', 'mode-loss'])
      $(id).addEventListener('change', (e) => { S.mode = e.target.value; update(); });
    const gs = $('gen-select');
    D.gens.forEach((g, i) => gs.append(el('option', {value: i}, g.name)));
    gs.hidden = D.gens.length < 2;
    gs.addEventListener('change', () => { S.gen = parseInt(gs.value, 10); S.token = 0; update(); });
    document.addEventListener('keydown', (e) => {
      if (e.target.tagName === 'SELECT' || e.target.tagName === 'INPUT' || e.altKey || e.ctrlKey || e.metaKey) return;
      const d = e.key === 'ArrowLeft' ? -1 : e.key === 'ArrowRight' ? 1 : 0;
      if (!d) return;
      e.preventDefault();
      if (S.view === 'train') setRec(S.rec + d);
      else if (S.view === 'read') setQuery(S.query + d);
      else setToken(S.token + d);
    });
    $('note').hidden = !D.note;
    $('note').textContent = D.note || '';
    $('footer').textContent = D.source + ' · ' + D.n_records + ' records, every ' + D.every + ' steps · ' +
      L + ' layers × ' + H + ' heads, probe of ' + T + ' tokens · attention quantized to 1 byte per value ' +
      '(per-row scale, error ≤ 0.2% of the row maximum)';
  }

  function syncControls() {
    for (const b of document.querySelectorAll('#tabs button'))
      b.setAttribute('aria-selected', String(b.dataset.view === S.view));
    for (const v of ['train', 'read', 'gen']) $('view-' + v).hidden = v !== S.view;
    $('step-group').style.display = S.view === 'gen' ? 'none' : '';  // a generation is of one checkpoint
    const r = $('step-range');
    r.max = String(Math.max(0, nrec() - 1));
    r.value = String(S.rec);
    $('step-label').textContent = nrec() ? 'step ' + D.records.step[S.rec] + ' · record ' + (S.rec + 1) + ' of ' + nrec() +
      ' · loss ' + fmt(D.records.loss[S.rec]) : 'no records yet';
    $('layer-select').value = String(S.layer);
    $('head-select').value = headStr(S.head);
    $('mode-att').checked = S.mode === 'att';
    $('mode-loss').checked = S.mode === 'loss';
    if (D.gens.length) $('gen-select').value = String(S.gen);
  }

  // ---- training view: the loss curve ------------------------------------------------------------

  const CH = {w: 560, h: 210, l: 44, r: 12, t: 12, b: 28};
  let chartX = null;
  function niceTicks(lo, hi, n) {
    const span = hi - lo || 1, step0 = Math.pow(10, Math.floor(Math.log10(span / n)));
    const step = [1, 2, 5, 10].map((m) => m * step0).find((s) => span / s <= n) || step0 * 10;
    const out = [];
    for (let v = Math.ceil(lo / step) * step; v <= hi + 1e-9; v += step) out.push(+v.toFixed(10));
    return out;
  }
  function drawLoss() {
    const g = $('loss-chart');
    g.textContent = '';
    const m = D.metrics || {}, tr = m.train_loss, va = m.val_loss;
    const xs = [].concat(tr ? tr.step : [], va ? va.step : [], D.records.step);
    const ys = [].concat(tr ? tr.loss : [], va ? va.loss : [], tr ? [] : D.records.loss).filter((v) => v !== null);
    if (!xs.length || !ys.length) { g.append(svg('text', {x: 200, y: 100}, 'no loss values yet')); chartX = null; return; }
    const x0 = Math.min(...xs), x1 = Math.max(...xs, x0 + 1), y0 = Math.min(...ys), y1 = Math.max(...ys, y0 + 1e-3);
    const X = (s) => CH.l + (s - x0) / (x1 - x0) * (CH.w - CH.l - CH.r);
    const Y = (v) => CH.t + (y1 - v) / (y1 - y0) * (CH.h - CH.t - CH.b);
    chartX = {X, x0, x1};
    g.append(svg('line', {class: 'axis', x1: CH.l, y1: CH.h - CH.b, x2: CH.w - CH.r, y2: CH.h - CH.b}),
      svg('line', {class: 'axis', x1: CH.l, y1: CH.t, x2: CH.l, y2: CH.h - CH.b}));
    for (const v of niceTicks(y0, y1, 5)) {
      g.append(svg('text', {x: CH.l - 5, y: Y(v) + 3, 'text-anchor': 'end'}, String(v)));
      g.append(svg('line', {class: 'axis', x1: CH.l - 3, x2: CH.l, y1: Y(v), y2: Y(v)}));
    }
    for (const v of niceTicks(x0, x1, 6))
      g.append(svg('text', {x: X(v), y: CH.h - CH.b + 14, 'text-anchor': 'middle'}, String(v)));
    const path = (ss, ls) =>
      ss.map((s, i) => ls[i] === null ? '' : (i ? 'L' : 'M') + X(s).toFixed(1) + ',' + Y(ls[i]).toFixed(1)).join('');
    if (tr) g.append(svg('path', {class: 'train', d: path(tr.step, tr.loss)}));
    else g.append(svg('path', {class: 'rec', d: path(D.records.step, D.records.loss)}));
    if (va)
      va.step.forEach((s, i) => {
        if (va.loss[i] !== null) g.append(svg('circle', {class: 'val', cx: X(s), cy: Y(va.loss[i]), r: 2.6}));
      });
    for (const s of D.records.step)
      g.append(svg('line', {class: 'tick', x1: X(s), x2: X(s), y1: CH.h - CH.b, y2: CH.h - CH.b + 4}));
    const mk = svg('g', {id: 'loss-marker'});
    mk.append(svg('line', {class: 'marker', y1: CH.t, y2: CH.h - CH.b}), svg('text', {class: 'marker-label', y: CH.t + 8}));
    g.append(mk);
  }
  function drawMarker() {
    const mk = $('loss-marker');
    if (!mk || !chartX || !nrec()) return;
    const s = D.records.step[S.rec], x = chartX.X(s);
    mk.firstChild.setAttribute('x1', x);
    mk.firstChild.setAttribute('x2', x);
    const t = mk.lastChild;
    t.textContent = 'step ' + s;
    t.setAttribute('x', x + (x > CH.w - 90 ? -4 : 4));
    t.setAttribute('text-anchor', x > CH.w - 90 ? 'end' : 'start');
  }
  function chartClick(e) {
    if (!chartX || !nrec()) return;
    const g = $('loss-chart'), pt = g.createSVGPoint();
    pt.x = e.clientX; pt.y = e.clientY;
    const p = pt.matrixTransform(g.getScreenCTM().inverse());
    const s = chartX.x0 + (p.x - CH.l) / (CH.w - CH.l - CH.r) * (chartX.x1 - chartX.x0);
    setRec(nearestRecord(s));
  }

  // ---- training view: heatmaps ---------------------------------------------------------------

  // n x n canvas, pixel (k, q) = the colour of attention row q at key k; white above the diagonal
  function paint(canvas, n, rowFn) {
    if (canvas.width !== n) { canvas.width = n; canvas.height = n; }
    const ctx = canvas.getContext('2d'), img = ctx.createImageData(n, n), px = img.data;
    const row = new Float32Array(n);
    for (let q = 0; q < n; q++) {
      rowFn(q, row);
      for (let k = 0; k < n; k++) {
        const o = 4 * (q * n + k);
        if (k <= q) { const c = 3 * cidx(row[k]); px[o] = CMAP[c]; px[o + 1] = CMAP[c + 1]; px[o + 2] = CMAP[c + 2]; }
        else px[o] = px[o + 1] = px[o + 2] = 255;
        px[o + 3] = 255;
      }
    }
    ctx.putImageData(img, 0, 0);
  }

  const gridCanvases = [];
  function buildGrid() {
    const g = $('grid');
    g.style.gridTemplateColumns = '2.4em repeat(' + (H + 1) + ', minmax(0, 1fr))';
    g.append(el('div'));
    for (let h = 0; h < H; h++) g.append(el('div', {class: 'lab'}, 'H' + h));
    g.append(el('div', {class: 'lab'}, 'mean'));
    for (let l = 0; l < L; l++) {
      g.append(el('div', {class: 'lab'}, 'L' + l));
      const row = [];
      for (let h = 0; h <= H; h++) {
        const head = h < H ? h : 'mean';
        const c = el('canvas', {'data-layer': l, 'data-head': headStr(head), title: 'layer ' + l + ', ' +
          (h < H ? 'head ' + h : 'mean of heads') + ': click to enlarge'});
        if (h === H) c.classList.add('mean');
        c.width = c.height = T;
        c.addEventListener('click', () => select(l, head));
        g.append(c);
        row.push(c);
      }
      gridCanvases.push(row);
    }
  }
  function drawGrid(rec) {
    for (let l = 0; l < L; l++)
      for (let h = 0; h <= H; h++) {
        const head = h < H ? h : 'mean', c = gridCanvases[l][h];
        paint(c, T, (q, out) => rowOf(rec, l, head, q, out));
        c.classList.toggle('sel', l === S.layer && head === S.head);
      }
  }

  let bigCell = 8;
  function buildBig() {
    bigCell = Math.max(3, Math.min(22, Math.floor(600 / T)));
    const c = $('big'), side = T * bigCell;
    c.width = c.height = T;
    c.style.width = c.style.height = side + 'px';
    const labels = bigCell >= 8, fs = Math.min(11, bigCell - 1) + 'px';
    const qs = $('big-queries'), ks = $('big-keys');
    qs.style.width = labels ? '92px' : '0';
    qs.style.height = side + 'px';
    ks.style.height = labels ? '64px' : '0';
    ks.style.width = side + 'px';
    if (labels)
      for (let t = 0; t < T; t++) {
        const a = el('div', {class: 'axlab', 'data-i': t}, label(D.tokens[t], 12));
        Object.assign(a.style, {top: t * bigCell + 'px', height: bigCell + 'px', lineHeight: bigCell + 'px', fontSize: fs});
        qs.append(a);
        const b = el('div', {class: 'axlab', 'data-i': t}, label(D.tokens[t], 12));
        b.style.left = (t * bigCell + bigCell / 2) + 'px'; b.style.fontSize = fs;
        ks.append(b);
      }
    const cb = $('colorbar'), ramp = el('canvas');
    ramp.width = 256; ramp.height = 1;
    const ctx = ramp.getContext('2d'), img = ctx.createImageData(256, 1);
    for (let i = 0; i < 256; i++) { img.data.set([CMAP[3 * i], CMAP[3 * i + 1], CMAP[3 * i + 2], 255], 4 * i); }
    ctx.putImageData(img, 0, 0);
    cb.append(el('span', {}, '0'), ramp, el('span', {}, '1   attention weight (square-root scale)'));
    c.addEventListener('mousemove', bigHover);
    c.addEventListener('mouseleave', () => { $('tip').hidden = true; setHover(null); });
    c.addEventListener('click', (e) => { const h = bigCellAt(e); if (h) setQuery(h.q); });
  }
  function bigCellAt(e) {
    const r = $('big').getBoundingClientRect();
    const k = Math.floor((e.clientX - r.left) / r.width * T), q = Math.floor((e.clientY - r.top) / r.height * T);
    return k >= 0 && k < T && q >= 0 && q < T ? {q, k} : null;
  }
  let current = null;  // the drawn record, for tooltips
  function bigHover(e) {
    const h = bigCellAt(e), tip = $('tip');
    if (!h || !current) { tip.hidden = true; return; }
    setHover(h.q);
    const v = h.k <= h.q ? rowOf(current, S.layer, S.head, h.q, new Float32Array(T))[h.k] : 0;
    tip.textContent = 'query ' + h.q + ' ' + label(D.tokens[h.q], 16) + '\nkey   ' + h.k + ' ' +
      label(D.tokens[h.k], 16) + '\nweight ' + (h.k <= h.q ? v.toFixed(4) : '— (future)');
    tip.dataset.q = h.q; tip.dataset.k = h.k; tip.dataset.v = h.k <= h.q ? v.toFixed(6) : '';
    tip.hidden = false;
    tip.style.left = (e.clientX + 14) + 'px';
    tip.style.top = (e.clientY + 12) + 'px';
  }
  function headName(h) { return typeof h === 'number' ? 'head ' + h : h + ' of heads'; }
  function drawBig(rec) {
    const c = $('big');
    paint(c, T, (q, out) => rowOf(rec, S.layer, S.head, q, out));
    c.dataset.layer = S.layer; c.dataset.head = headStr(S.head); c.dataset.step = D.records.step[S.rec];
    $('big-title').textContent = 'layer ' + S.layer + ', ' + headName(S.head) + ' · step ' + D.records.step[S.rec] +
      ' (loss ' + fmt(D.records.loss[S.rec]) + ')';
    markQuery();
  }
  function markQuery() {
    const q = S.hover !== null ? S.hover : S.query, row = $('big-row');
    row.style.top = (q * bigCell) + 'px'; row.style.height = bigCell + 'px'; row.style.width = (T * bigCell) + 'px';
    for (const a of document.querySelectorAll('#big-queries .axlab')) a.classList.toggle('q', +a.dataset.i === q);
  }

  // head view: the probe twice; lines from the query (left) to each key (right), opacity = weight
  const HV = {row: Math.max(10, Math.min(16, Math.floor(720 / T))), left: 150, gap: 90};
  function buildHeadView() {
    const g = $('headview'), w = 2 * HV.left + HV.gap, h = T * HV.row + 8;
    g.setAttribute('viewBox', '0 0 ' + w + ' ' + h);
    g.setAttribute('width', w);
    g.setAttribute('height', h);
    g.append(svg('g', {id: 'hv-lines'}));
    for (let t = 0; t < T; t++) {
      const y = 4 + t * HV.row + HV.row * 0.75, lab = label(D.tokens[t], 18);
      const a = svg('text', {x: HV.left - 6, y: y, 'text-anchor': 'end', 'data-i': t, class: 'hv-q'}, lab);
      if (HV.row < 14) g.style.fontSize = (HV.row - 1) + 'px';
      a.addEventListener('mouseenter', () => setHover(t));
      a.addEventListener('mouseleave', () => setHover(null));
      a.addEventListener('click', () => setQuery(t));
      g.append(a, svg('text', {x: HV.left + HV.gap + 6, y: y, 'data-i': t, class: 'hv-k'}, lab));
    }
  }
  function drawHeadView() {
    const lines = $('hv-lines');
    lines.textContent = '';
    if (!current) return;
    const q = S.hover !== null ? S.hover : S.query, row = rowOf(current, S.layer, S.head, q, new Float32Array(T));
    const y = (t) => 4 + t * HV.row + HV.row / 2;
    for (let k = 0; k <= q; k++) {
      if (row[k] < 0.005) continue;
      lines.append(svg('line', {x1: HV.left, y1: y(q), x2: HV.left + HV.gap, y2: y(k),
        'stroke-opacity': Math.min(1, 0.15 + Math.sqrt(row[k])).toFixed(3), 'stroke-width': (0.6 + 4 * row[k]).toFixed(2),
        'data-k': k, 'data-w': row[k].toFixed(6)}));
    }
    for (const t of document.querySelectorAll('#headview text.hv-q')) t.classList.toggle('q', +t.dataset.i === q);
  }
  function setHover(q) {
    if (S.hover === q) return;
    S.hover = q;
    if (S.view === 'train') { markQuery(); drawHeadView(); }
  }

  // ---- reading view --------------------------------------------------------------------------

  function tokenSpan(text, i) {
    const s = el('span', {class: 'tok', 'data-i': i});
    // a newline shows as ↵ and then breaks the line; other text as is
    const parts = text.split('\n');
    parts.forEach((p, j) => {
      if (j) { s.append(el('span', {class: 'ws'}, '↵'), document.createTextNode('\n')); }
      if (p) s.append(document.createTextNode(p));
    });
    if (!text.length) s.append(el('span', {class: 'ws'}, '∅'));
    return s;
  }
  let readSpans = [], lossMax = 1;
  function buildReadText() {
    const box = $('read-text');
    readSpans = D.tokens.map((t, i) => {
      const s = tokenSpan(t, i);
      s.addEventListener('click', () => setQuery(i));
      s.addEventListener('mouseenter', (e) => showTip(e, s.title));
      s.addEventListener('mouseleave', () => { $('tip').hidden = true; });
      box.append(s);
      return s;
    });
    if (D.token_loss) {
      const all = [].concat(...D.token_loss).filter((v) => v !== null).sort((a, b) => a - b);
      lossMax = all.length ? Math.max(1e-3, all[Math.floor(0.99 * (all.length - 1))]) : 1;
    }
  }
  function showTip(e, text) {
    const tip = $('tip');
    if (!text) return;
    tip.textContent = text;
    tip.dataset.v = '';
    tip.hidden = false;
    tip.style.left = (e.clientX + 12) + 'px';
    tip.style.top = (e.clientY + 14) + 'px';
  }
  function legend(box, css0, css1, lo, hi, what) {
    box.textContent = '';
    const ramp = el('div', {class: 'ramp'});
    ramp.style.background = 'linear-gradient(to right, ' + css0 + ', ' + css1 + ')';
    box.append(el('span', {}, lo), ramp, el('span', {}, hi), el('span', {}, what));
  }
  function drawRead(rec) {
    const q = S.query;
    if (S.mode === 'loss') {
      const tl = D.token_loss ? D.token_loss[S.rec] : null;
      readSpans.forEach((s, i) => {
        s.className = 'tok';
        delete s.dataset.w;
        const v = i > 0 && tl ? tl[i - 1] : null;
        s.style.background = v === null ? '' : 'rgba(var(--bad), ' + Math.min(1, v / lossMax).toFixed(3) + ')';
        if (v === null) delete s.dataset.loss; else s.dataset.loss = v;
        s.title = i === 0 ? 'the first token: nothing predicts it' : v === null ? 'no loss recorded' :
          'loss ' + fmt(v) + ' nats (p = ' + fmt(Math.exp(-v), 4) + ')';
      });
      if (!D.token_loss) {
        $('query-label').textContent = 'surprise is unavailable: this attention.h5 has no /token_loss (written by a ' +
          'gpt-train from before it recorded the loss on each token, or a one-token probe)';
        legend($('read-legend'), 'transparent', 'transparent', '', '', '');
      } else {
        $('query-label').textContent = 'surprise at step ' + D.records.step[S.rec] + ': each token shaded by the loss ' +
          'of predicting it from the tokens before it';
        legend($('read-legend'), 'rgba(200,30,60,0)', 'rgba(200,30,60,1)', '0', fmt(lossMax, 2) + '+',
               'nats (cross-entropy)');
      }
      return;
    }
    const row = rowOf(rec, S.layer, S.head, q, new Float32Array(T));
    readSpans.forEach((s, i) => {
      s.className = 'tok' + (i === q ? ' query' : i > q ? ' future' : '');
      delete s.dataset.loss;
      if (i <= q) {
        s.dataset.w = row[i].toFixed(6);
        s.style.background = 'rgba(var(--hl), ' + Math.sqrt(row[i]).toFixed(3) + ')';
        s.title = label(D.tokens[i], 24) + ' ← ' + row[i].toFixed(4) + ' from ' + label(D.tokens[q], 24);
      } else {
        delete s.dataset.w;
        s.style.background = '';
        s.title = 'after the query: not attended to';
      }
    });
    $('query-label').textContent = 'query ' + q + ' ' + label(D.tokens[q], 20) + ' · layer ' + S.layer + ', ' +
      headName(S.head) + ' · step ' + D.records.step[S.rec];
    legend($('read-legend'), 'rgba(240,140,0,0)', 'rgba(240,140,0,1)', '0', '1',
           'attention weight from the query (square-root scale)');
  }

  // ---- generation view -----------------------------------------------------------------------

  let genSpans = [], genBuilt = -1;
  function buildGenText() {
    const box = $('gen-text');
    box.textContent = '';
    genSpans = [];
    genBuilt = S.gen;
    if (!D.gens.length) return;
    const G = D.gens[S.gen];
    G.tokens.forEach((t, i) => {
      if (i === G.n_prompt) box.append(el('span', {class: 'prompt-end', title: 'end of the prompt'}));
      const s = tokenSpan(t, i);
      s.addEventListener('click', () => { if (i >= G.n_prompt) setToken(i - G.n_prompt); });
      s.addEventListener('mouseenter', (e) => showTip(e, s.title));
      s.addEventListener('mouseleave', () => { $('tip').hidden = true; });
      box.append(s);
      genSpans.push(s);
    });
  }
  function drawGen(gr) {
    const G = D.gens[S.gen], N = G.context_start.length;
    if (!N) { $('token-label').textContent = G.name + ': no generated tokens'; return; }
    const J = S.token, P = G.n_prompt, qi = P - 1 + J, s0 = G.context_start[J], drawn = P + J;
    const row = genRow(gr, G, J, S.layer, S.head);
    genSpans.forEach((s, i) => {
      delete s.dataset.w;
      s.style.background = '';
      if (i < s0) { s.className = 'tok outside'; s.title = 'outside the context window (the window slid past it)'; }
      else if (i <= qi) {
        const w = row[i - s0];
        s.className = 'tok' + (i === qi ? ' query' : '');
        s.dataset.w = w.toFixed(6);
        s.style.background = 'rgba(var(--hl), ' + Math.sqrt(w).toFixed(3) + ')';
        s.title = label(G.tokens[i], 24) + ' ← ' + w.toFixed(4);
      } else if (i === drawn) { s.className = 'tok drawn'; s.title = 'the token drawn at this step'; }
      else { s.className = 'tok after'; s.title = ''; }
    });
    const top = G.top, cands = $('gen-cands');
    cands.textContent = '';
    let p = null;
    if (top) {
      const ids = top.ids[J], probs = top.probs[J], toks = top.tokens ? top.tokens[J] : null;
      ids.forEach((id, r) => {
        const isDrawn = id === G.token_ids[drawn];
        const row = el('div', {class: 'c-row' + (isDrawn ? ' drawn' : ''), 'data-id': id, 'data-p': probs[r]});
        const bar = el('div', {class: 'c-bar'}), fill = el('div');
        fill.style.width = (100 * Math.max(0, Math.min(1, probs[r]))).toFixed(2) + '%';
        bar.append(fill);
        row.append(el('span', {class: 'c-rank'}, String(r + 1)),
          el('span', {class: 'c-tok'}, toks ? label(toks[r], 24) : '#' + id), bar,
          el('span', {class: 'c-p'}, (100 * probs[r]).toFixed(2) + '%'));
        cands.append(row);
        if (isDrawn) p = probs[r];
      });
      if (p === null)
        cands.append(el('div', {class: 'c-note'}, 'the drawn token ' + label(G.tokens[drawn], 24) + ' is not among these'));
    } else {
      cands.append(el('div', {class: 'empty', id: 'cands-none'}, 'Candidates are unavailable: this generation file ' +
        'was written before gpt-sample recorded them (/top_ids, /top_probs); sample again to get them.'));
    }
    $('token-label').textContent = 'token ' + J + ' of ' + N + ': ' + label(G.tokens[drawn], 20) +
      (p !== null ? ' (p = ' + fmt(p, 4) + ')' : '') + ' · layer ' + S.layer + ', ' + headName(S.head) +
      ' · checkpoint step ' + G.step + ', temperature ' + +Number(G.temperature).toPrecision(4);
    legend($('gen-legend'), 'rgba(240,140,0,0)', 'rgba(240,140,0,1)', '0', '1',
      'attention of the query (outlined) that drew the dashed token, over its context window');
  }

  // ---- rendering -----------------------------------------------------------------------------

  let renderSeq = 0, pending = false;
  function update() {
    writeHash();
    syncControls();
    if (!pending) { pending = true; requestAnimationFrame(render); }
  }
  async function render() {
    pending = false;
    const seq = ++renderSeq, want = hashString();
    try {
      if (S.view === 'gen') {
        $('gen-none').hidden = D.gens.length > 0;
        $('gen-body').hidden = !D.gens.length;
        if (D.gens.length) {
          const gr = await getGen(S.gen);
          if (seq !== renderSeq) return;
          if (genBuilt !== S.gen) buildGenText();
          drawGen(gr);
        }
      } else if (nrec()) {
        const rec = await getRecord(S.rec);
        if (seq !== renderSeq) return;
        current = rec;
        if (S.view === 'train') { drawMarker(); drawGrid(rec); drawBig(rec); drawHeadView(); }
        else drawRead(rec);
        prefetch();
      }
      document.body.dataset.drawn = want;
      // the first complete drawing: what bench/bench_explorer.py reports as time to interactive
      if (!window.explorerReady) window.explorerReady = performance.now();
    } catch (e) {
      console.error(e);
      note('Cannot show this: ' + e.message);
    }
  }
  function note(msg) { $('note').hidden = false; $('note').textContent = msg; }
  let prefetching = false;
  async function prefetch() {  // decode the neighbours (and then the rest) while idle
    if (prefetching) return;
    prefetching = true;
    try {
      const order = [S.rec + 1, S.rec - 1];
      for (let r = 0; r < nrec(); r++) order.push(r);
      for (const r of order)
        if (r >= 0 && r < nrec() && !cache.has(recordKey(r))) {
          await getRecord(r);
          await new Promise((ok) => setTimeout(ok, 0));  // let input and drawing in between
        }
      if (!window.explorerDecoded) window.explorerDecoded = performance.now();
    } catch (e) { /* shown when that record is drawn */ }
    prefetching = false;
  }

  // ---- live (--serve) ------------------------------------------------------------------------

  let lastSig = '';
  async function poll() {
    const st = $('live-status');
    try {
      const resp = await fetch('api/meta', {cache: 'no-store'});
      if (!resp.ok) throw new Error('HTTP ' + resp.status);
      const m = await resp.json();
      if (m.waiting) { st.textContent = 'live · waiting: ' + m.waiting; return; }
      if (m.live.version !== D.live.version) cache.clear();
      const curve = (k) => (m.metrics && m.metrics[k] ? m.metrics[k].step.length : 0);
      const sig = JSON.stringify([m.live.version, m.records.step, curve('train_loss'), curve('val_loss')]);
      st.className = 'on';
      st.textContent = 'live · ' + m.n_records + ' records · ' + new Date().toLocaleTimeString();
      if (sig === lastSig) return;
      lastSig = sig;
      const atStep = nrec() ? D.records.step[S.rec] : null;
      for (const k of ['records', 'token_loss', 'metrics', 'n_records', 'note', 'live']) D[k] = m[k];
      if (S.follow || atStep === null) S.rec = Math.max(0, nrec() - 1);
      else S.rec = nearestRecord(atStep);
      if (D.note) { $('note').hidden = false; $('note').textContent = D.note; }
      drawLoss();
      update();
    } catch (e) {
      st.className = '';
      st.textContent = 'live · cannot reach the server (' + e.message + '), retrying';
    } finally {
      setTimeout(poll, (D.live && D.live.poll_ms) || 1500);
    }
  }

  // ---- start ---------------------------------------------------------------------------------

  initControls();
  buildGrid();
  buildBig();
  buildHeadView();
  buildReadText();
  $('loss-chart').addEventListener('click', chartClick);
  readHash();
  drawLoss();
  update();
  if (D.live) { $('live-status').hidden = false; setTimeout(poll, D.live.poll_ms || 1500); }
  window.explorer = {state: S, data: D, hash: hashString};
})();
