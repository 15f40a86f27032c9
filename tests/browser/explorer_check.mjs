// explorer_check.mjs - drives the attention explorer page in Debian's headless Chromium
// (puppeteer-core, nothing downloaded) and checks it against what the HDF5 files hold.
//
//   node tests/browser/explorer_check.mjs EXPECT.json
//
// EXPECT.json is written by tests/browser/test_explorer.py: the page's URL, and the values
// read with h5py (tokens, attention, per-token loss, generation rows and candidates). Modes:
//   static  the --html page from file://: every view, the hash, heatmap cells read back
//   old     a page of files without /token_loss and /top_ids: the views say so
//   live    a --serve page while gpt-train runs: it follows new records
//   time    prints the time to interactive (bench/bench_explorer.py)
//   shot    screenshots: shots = [{hash, path, width, height, hover (a selector)}] (docs/img/)
// Every mode fails on a console error or a request outside file:, data: (or the server).
// Exit 0 when all checks pass, 1 otherwise (each failure printed).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import puppeteer from 'puppeteer-core';

const E = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const failures = [];
let checks = 0;
function ok(cond, what) {
  checks++;
  if (!cond) { failures.push(what); console.log('FAIL ' + what); }
}
function near(a, b, tol) { return Math.abs(a - b) <= tol; }

// same as the page's and gpt_viz.py's token_label: what an axis shows for a token
function label(t, max) {
  let s = t.replace(/\n/g, '↵').replace(/\r/g, '␍').replace(/\t/g, '⇥').replace(/ /g, '·')
    .replace(/[\x00-\x1f\x7f]/g, (c) => '\\x' + c.charCodeAt(0).toString(16).padStart(2, '0'));
  if (max && s.length > max) s = s.slice(0, max - 1) + '…';
  return s;
}
// running text: a newline token shows as ↵ then breaks the line; an empty token as ∅
function runningText(t) { return t.length ? t.replace(/\n/g, '↵\n') : '∅'; }
// the quantization's bound (docs/attention.md): rowmax/510, the scale rounded up to float16
function qtol(rowmax) { return rowmax / 510 * 1.001 + 1e-6; }

const cmap = [];
for (let i = 0; i < (E.cmap || "").length; i += 6) cmap.push([0, 2, 4].map((j) => parseInt(E.cmap.substr(i + j, 2), 16)));
function cidx(v) { return v <= 0 ? 0 : v >= 1 ? 255 : Math.round(Math.sqrt(v) * 255); }
// the colormap entries of an RGB pixel (neighbours can share a colour)
function colourIndices(px) {
  return cmap.map((c, i) => (c[0] === px[0] && c[1] === px[1] && c[2] === px[2] ? i : -1)).filter((i) => i >= 0);
}
// the pixel shows the colour of a value within tol of v
function colourOk(px, v, tol) {
  const got = colourIndices(px);
  return {ok: got.some((i) => i >= cidx(v - tol) && i <= cidx(v + tol)), got: got.join('/')};
}

// Debian's Chromium by default; E.firefox (e.g. /usr/bin/firefox-esr) drives Firefox over
// WebDriver BiDi instead, for a by-hand check that the page works there too.
const userDir = fs.mkdtempSync(path.join(os.tmpdir(), 'explorer-browser-'));
const browser = await puppeteer.launch(E.firefox ? {
  browser: 'firefox', executablePath: E.firefox, headless: true, userDataDir: userDir,
} : {
  executablePath: E.chromium || '/usr/bin/chromium',
  headless: true,
  userDataDir: userDir,
  args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
         '--disable-component-update', '--disable-sync', '--disable-extensions', '--disable-default-apps'],
});
const errors = [], outside = [];
async function newPage() {
  const p = await browser.newPage();
  p.on('console', (m) => { if (m.type() === 'error') errors.push('console: ' + m.text()); });
  p.on('pageerror', (e) => errors.push('page error: ' + e.message));
  p.on('requestfailed', (r) => errors.push('request failed: ' + r.url() + ' ' + (r.failure() || {}).errorText));
  p.on('request', (r) => {
    const u = r.url();
    if (!(u.startsWith('file:') || u.startsWith('data:') || (E.server && u.startsWith(E.server)))) outside.push(u);
  });
  await p.setViewport({width: 1400, height: 1000});
  return p;
}
const page = await newPage();

const drawn = () => page.waitForFunction(() => document.body.dataset.drawn === location.hash, {timeout: 20000});
const hash = () => page.evaluate(() => location.hash);
function hashOf(h) { return Object.fromEntries(new URLSearchParams(h.replace(/^#/, ''))); }
// a fresh load of the page with hash h (a new hash alone would be a same-document navigation)
async function open(h) {
  await page.goto(E.url + h);
  await page.reload();
  await page.waitForFunction('window.explorerReady', {timeout: 30000});
  await drawn();
}
// only the hash changes, as when a user edits it: the page follows
async function goHash(h) {
  await page.evaluate((h) => { location.hash = h; }, h);
  await drawn();
}
// pixel (k, q) of a canvas (one pixel per cell)
async function pixel(sel, k, q) {
  return page.$eval(sel, (c, k, q) => Array.from(c.getContext('2d').getImageData(k, q, 1, 1).data), k, q);
}
async function canvasSum(sel) {
  return page.$eval(sel, (c) => {
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    let s = 0;
    for (let i = 0; i < d.length; i++) s = (s * 31 + d[i]) % 1000000007;
    return s;
  });
}
// attention value of the HDF5 data: record r, layer l, head (number, 'mean', 'max'), row q, key k
function att(r, l, head, q, k) {
  const row = (h) => E.att[r][l][h][q];
  if (typeof head === 'number') return {v: row(head)[k], tol: qtol(Math.max(...row(head)))};
  const vals = E.att[r][l].map((_, h) => row(h)[k]);
  const tol = Math.max(...E.att[r][l].map((_, h) => qtol(Math.max(...row(h)))));
  return {v: head === 'max' ? Math.max(...vals) : vals.reduce((a, b) => a + b, 0) / vals.length, tol};
}
function parseHead(s) { return s === 'mean' || s === 'max' ? s : parseInt(s, 10); }

async function checkCells(r, l, head, what) {
  // heatmap pixels (the colour of the HDF5 value, up to the quantization) and the tooltip value
  const box = await page.$eval('#big', (c) => { const b = c.getBoundingClientRect(); return [b.left, b.top, b.width]; });
  const T = E.T, cells = [[T - 1, 0], [T - 1, T - 1], [Math.floor(T / 2), 1], [3, 2], [T - 2, T - 3]];
  for (const [q, k] of cells) {
    const {v, tol} = att(r, l, head, q, k);
    const c = colourOk(await pixel('#big', k, q), v, tol);
    ok(c.ok, `${what}: pixel (q ${q}, k ${k}) colour ${c.got}, expected ${cidx(v)} (value ${v})`);
    await page.mouse.move(box[0] + (k + 0.5) * box[2] / T, box[1] + (q + 0.5) * box[2] / T);
    const tip = await page.$eval('#tip', (t) => [t.hidden, t.dataset.q, t.dataset.k, t.dataset.v]);
    ok(!tip[0] && +tip[1] === q && +tip[2] === k && near(+tip[3], v, tol),
       `${what}: tooltip at (q ${q}, k ${k}) says ${tip.slice(1)}, HDF5 ${v} ± ${tol}`);
  }
  const up = await pixel('#big', T - 1, 0);
  ok(up[0] === 255 && up[1] === 255 && up[2] === 255, `${what}: above the diagonal is white`);
  await page.mouse.move(2, 2);
}

async function readSpans() {
  return page.$$eval('#read-text .tok', (ss) => ss.map((s) => ({text: s.textContent, w: s.dataset.w, loss: s.dataset.loss,
    cls: s.className})));
}

async function staticChecks() {
  const E_rec = E.steps.length - 1, L = E.L, H = E.H, T = E.T;
  // ---- training view, opened with a hash ----
  const r0 = Math.max(0, E_rec - 2), s0 = E.steps[r0];
  await open(`#view=train&step=${s0}&layer=1&head=0`);
  let st = await page.evaluate(() => ({
    tab: document.querySelector('#tab-train').getAttribute('aria-selected'), vis: !document.querySelector('#view-train').hidden,
    read: !document.querySelector('#view-read').hidden, layer: document.querySelector('#layer-select').value,
    head: document.querySelector('#head-select').value, step: document.querySelector('#step-label').textContent,
    bigStep: document.querySelector('#big').dataset.step}));
  ok(st.tab === 'true' && st.vis && !st.read, 'hash view=train shows the training view');
  ok(st.layer === '1' && st.head === '0', `hash layer/head selected: ${st.layer}/${st.head}`);
  ok(st.step.startsWith('step ' + s0 + ' ') && st.bigStep === String(s0), `hash step ${s0} shown: ${st.step}`);
  const hv = await page.$$eval('#headview text.hv-q', (ts) => ts.map((t) => t.textContent));
  ok(JSON.stringify(hv) === JSON.stringify(E.tokens.map((t) => label(t, 18))), `head view shows the probe's tokens: ${hv}`);
  const grid = await page.$$eval('#grid canvas', (cs) => cs.length);
  ok(grid === L * (H + 1), `model view: ${grid} heatmaps for ${L} layers x (${H} heads + mean)`);
  await checkCells(r0, 1, 0, `step ${s0} L1 H0`);
  // a small-multiple cell too, including the mean column
  for (const [l, h] of [[0, 1 % H], [L - 1, 'mean']]) {
    const sel = `#grid canvas[data-layer="${l}"][data-head="${h}"]`, {v, tol} = att(r0, l, h, T - 1, 1);
    const c = colourOk(await pixel(sel, 1, T - 1), v, tol);
    ok(c.ok, `grid L${l} H${h}: pixel colour ${c.got}, expected ${cidx(v)}`);
  }
  // loss curve: the marker sits at the record's step
  const mk = await page.$eval('#loss-marker text', (t) => t.textContent);
  ok(mk === 'step ' + s0, `loss marker label: ${mk}`);

  // ---- clicking a head changes the hash and the drawing ----
  let before = await canvasSum('#big');
  await page.click(`#grid canvas[data-layer="0"][data-head="${1 % H}"]`);
  await drawn();
  let h = hashOf(await hash());
  ok(h.layer === '0' && h.head === String(1 % H) && h.view === 'train', `click on L0 H${1 % H}: hash ${JSON.stringify(h)}`);
  ok(await canvasSum('#big') !== before, 'click on a head redraws the enlarged heatmap');
  await checkCells(r0, 0, 1 % H, `after the click, L0 H${1 % H}`);
  await page.click(`#grid canvas[data-layer="0"][data-head="mean"]`);
  await drawn();
  ok(hashOf(await hash()).head === 'mean', 'click on a mean heatmap: head=mean');
  await checkCells(r0, 0, 'mean', 'L0 mean of heads');

  // ---- moving the step ----
  before = await canvasSum('#big');
  const mx0 = await page.$eval('#loss-marker line', (l) => l.getAttribute('x1'));
  await page.click('#step-next');
  await drawn();
  h = hashOf(await hash());
  ok(h.step === String(E.steps[r0 + 1]), `step-next: hash step ${h.step}, expected ${E.steps[r0 + 1]}`);
  ok(await canvasSum('#big') !== before, 'step-next redraws the heatmap');
  ok(await page.$eval('#loss-marker line', (l) => l.getAttribute('x1')) !== mx0, 'step-next moves the loss marker');
  await page.$eval('#step-range', (r) => { r.value = '0'; r.dispatchEvent(new Event('input')); });
  await drawn();
  ok(hashOf(await hash()).step === String(E.steps[0]), 'the scrubber moves to the first record');
  await checkCells(0, 0, 'mean', `step ${E.steps[0]} L0 mean`);
  // hovering a query in the head view draws its lines, weights from the HDF5 row
  await page.hover(`#headview text.hv-q[data-i="${T - 1}"]`);
  const lines = await page.$$eval('#hv-lines line', (ls) => ls.map((l) => [+l.dataset.k, +l.dataset.w]));
  ok(lines.length > 0, 'head view: lines drawn for the hovered query');
  for (const [k, w] of lines) {
    const {v, tol} = att(0, 0, 'mean', T - 1, k);
    ok(near(w, v, tol), `head view line to key ${k}: ${w}, HDF5 ${v}`);
  }

  // ---- reading view ----
  const rr = E_rec, sr = E.steps[rr], q = T - 2;
  await open(`#view=read&step=${sr}&layer=${L - 1}&head=max&query=${q}`);
  st = await page.evaluate(() => ({vis: !document.querySelector('#view-read').hidden,
    head: document.querySelector('#head-select').value, label: document.querySelector('#query-label').textContent}));
  ok(st.vis && st.head === 'max' && st.label.startsWith('query ' + q + ' '), `hash view=read: ${JSON.stringify(st)}`);
  let spans = await readSpans();
  ok(spans.map((s) => s.text).join('') === E.tokens.map(runningText).join(''), 'reading view shows the probe as text');
  for (let k = 0; k < T; k++) {
    if (k > q) { ok(spans[k].w === undefined && spans[k].cls.includes('future'), `token ${k} after the query is not shaded`); continue; }
    const {v, tol} = att(rr, L - 1, 'max', q, k);
    ok(near(+spans[k].w, v, tol), `read: token ${k} weight ${spans[k].w}, HDF5 max over heads ${v}`);
  }
  ok(spans[q].cls.includes('query'), 'the query token is outlined');
  await page.click('#query-prev');
  await drawn();
  ok(hashOf(await hash()).query === String(q - 1), 'query-prev: hash query moves');
  spans = await readSpans();
  ok(spans[q].cls.includes('future') && near(+spans[0].w, att(rr, L - 1, 'max', q - 1, 0).v, att(rr, L - 1, 'max', q - 1, 0).tol),
     'query-prev: the shading is the new query\'s');
  await page.select('#head-select', '0');
  await drawn();
  spans = await readSpans();
  ok(hashOf(await hash()).head === '0' && near(+spans[1].w, att(rr, L - 1, 0, q - 1, 1).v, att(rr, L - 1, 0, q - 1, 1).tol),
     'head select: one head\'s weights');
  // surprise mode
  await page.click('#mode-loss');
  await drawn();
  ok(hashOf(await hash()).mode === 'loss', 'surprise mode is in the hash');
  spans = await readSpans();
  ok(spans[0].loss === undefined, 'the first token has no loss');
  for (let i = 1; i < T; i++) {
    const want = E.token_loss[rr][i - 1];
    ok(near(+spans[i].loss, want, 1e-3 * Math.abs(want) + 1e-5), `surprise: token ${i} loss ${spans[i].loss}, HDF5 ${want}`);
  }

  // ---- generation view ----
  for (let g = 0; g < E.gens.length; g++) {
    const G = E.gens[g], J = Math.min(2, G.top_ids.length - 1);
    await open(`#view=gen&layer=1&head=0&token=${J}` + (E.gens.length > 1 ? `&gen=${g}` : ''));
    const gs = await page.$$eval('#gen-text .tok', (ss) => ss.map((s) => ({text: s.textContent, w: s.dataset.w, cls: s.className})));
    ok(gs.map((s) => s.text).join('') === G.tokens.map(runningText).join(''),
       `gen ${g}: the text is the file's tokens: ${JSON.stringify(gs.map((s) => s.text))} vs ${JSON.stringify(G.tokens)}`);
    const P = G.n_prompt, qi = P - 1 + J, s0g = G.context_start[J];
    for (let i = s0g; i <= qi; i++) {
      const row = G.rows[J][1][0], v = row[i - s0g], tol = qtol(Math.max(...row));
      ok(near(+gs[i].w, v, tol), `gen ${g} token ${J}: context token ${i} weight ${gs[i].w}, HDF5 ${v}`);
    }
    ok(gs[P + J].cls.includes('drawn'), `gen ${g}: the drawn token is marked`);
    const cands = await page.$$eval('#gen-cands .c-row', (rs) => rs.map((r) => [+r.dataset.id, +r.dataset.p, r.querySelector('.c-tok').textContent]));
    ok(cands.length === G.top_ids[J].length, `gen ${g}: ${cands.length} candidates, K = ${G.top_ids[J].length}`);
    cands.forEach(([id, p, t], r) => {
      ok(id === G.top_ids[J][r] && near(p, G.top_probs[J][r], 1e-3 * G.top_probs[J][r] + 1e-6),
         `gen ${g} candidate ${r}: id ${id} p ${p}, HDF5 ${G.top_ids[J][r]} ${G.top_probs[J][r]}`);
      ok(t === label(G.top_tokens[J][r], 24), `gen ${g} candidate ${r}: text ${t}`);
    });
    before = JSON.stringify(gs.map((s) => s.w));
    await page.click('#token-next');
    await drawn();
    ok(hashOf(await hash()).token === String(J + 1), 'token-next: hash token moves');
    const after = await page.$$eval('#gen-text .tok', (ss) => JSON.stringify(ss.map((s) => s.dataset.w)));
    ok(after !== before, 'token-next: the shading changes');
  }
  // editing the hash alone moves the page too
  if (E.gens.length > 1) {
    await goHash('#view=gen&layer=0&head=1&token=1&gen=0');
    const gs = await page.$$eval('#gen-text .tok', (ss) => ss.map((s) => s.textContent).join(''));
    ok(gs === E.gens[0].tokens.map(runningText).join(''), 'a hash edit switches the generation file');
  }
  await goHash(`#view=read&step=${E.steps[1]}&layer=0&head=1&query=4`);
  const sp = await readSpans(), w = att(1, 0, 1, 4, 2);
  ok(near(+sp[2].w, w.v, w.tol) && sp[4].cls.includes('query'), 'a hash edit moves the reading view');
  // tabs switch views and keep the rest of the state
  await page.click('#tab-train');
  await drawn();
  ok(hashOf(await hash()).view === 'train' && !(await page.$eval('#view-train', (v) => v.hidden)), 'the Training tab');
}

async function oldChecks() {
  await open('#view=read&mode=loss');
  const lab = await page.$eval('#query-label', (e) => e.textContent);
  ok(/unavailable/.test(lab) && /token_loss/.test(lab), `no /token_loss: the surprise view says so (${lab})`);
  if (E.gens.length) {
    await open('#view=gen');
    ok(await page.$('#cands-none') !== null, 'no /top_ids: the candidates say they are unavailable');
  }
  const spans = await readSpans();
  ok(spans.map((s) => s.text).join('') === E.tokens.map(runningText).join(''), 'old file: the probe text');
}

async function liveChecks() {
  // the page follows the run: new records appear and the view moves to the newest
  await open('#view=train');
  // records in attention.h5 (the page keeps at most --max-steps of them)
  const count = () => page.$eval('#live-status', (e) => { const m = /(\d+) records/.exec(e.textContent); return m ? +m[1] : 0; });
  await page.waitForFunction(() => /\d+ records/.test(document.querySelector('#live-status').textContent), {timeout: 20000});
  const n0 = await count(), s0 = await page.$eval('#big', (c) => +c.dataset.step || 0);
  let n1 = n0, s1 = s0;
  const deadline = Date.now() + (E.live_wait_s || 90) * 1000;
  while (Date.now() < deadline && (n1 < n0 + 2 || s1 <= s0)) {
    await new Promise((r) => setTimeout(r, 500));
    n1 = await count();
    s1 = await page.$eval('#big', (c) => +c.dataset.step || 0);
  }
  ok(n1 >= n0 + 2, `live: records ${n0} -> ${n1} while gpt-train runs`);
  ok(s1 > s0, `live: the view follows the newest record (step ${s0} -> ${s1})`);
  const pts = await page.$eval('#loss-chart path', (p) => p.getAttribute('d').split(/[ML]/).length);
  ok(pts > 2, `live: the loss curve has ${pts} points`);
  const status = await page.$eval('#live-status', (e) => e.textContent);
  ok(/^live/.test(status), `live status: ${status}`);
}

// time to interactive: from navigation start to the first complete drawing of the view
// (window.explorerReady), each load in a fresh tab; and until every record is decoded
async function timeChecks() {
  const runs = [];
  for (let i = 0; i < (E.repeat || 5); i++) {
    const p = await newPage();
    await p.goto(E.url + (E.hash || '#view=train'));
    await p.waitForFunction('window.explorerReady && window.explorerDecoded', {timeout: 120000});
    runs.push(await p.evaluate(() => ({interactive_ms: window.explorerReady, decoded_ms: window.explorerDecoded,
      heap_mb: performance.memory ? performance.memory.usedJSHeapSize / 1e6 : null})));
    await p.close();
  }
  console.log('TIMES ' + JSON.stringify(runs));
}

async function shots() {
  for (const sh of E.shots) {
    await page.setViewport({width: sh.width || 1400, height: sh.height || 900});
    await open(sh.hash);
    if (sh.hover) await page.hover(sh.hover);
    await page.screenshot({path: sh.path});
    console.log('wrote ' + sh.path);
  }
}

try {
  if (E.mode === 'static') await staticChecks();
  else if (E.mode === 'shot') await shots();
  else if (E.mode === 'old') await oldChecks();
  else if (E.mode === 'live') await liveChecks();
  else if (E.mode === 'time') await timeChecks();
  else throw new Error('unknown mode ' + E.mode);
  if (E.screenshot) await page.screenshot({path: E.screenshot, fullPage: true});
} catch (e) {
  failures.push('exception: ' + (e.stack || e));
  console.log('FAIL exception: ' + (e.stack || e));
}
ok(errors.length === 0, 'no console errors: ' + errors.join(' | '));
ok(outside.length === 0, 'no request outside file:, data:' + (E.server ? ' and ' + E.server : '') + ': ' + outside.join(' '));
await browser.close();
fs.rmSync(userDir, {recursive: true, force: true});
console.log(`${E.mode}: ${checks - failures.length} of ${checks} checks passed`);
process.exit(failures.length ? 1 : 0);
