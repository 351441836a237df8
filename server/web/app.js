// tlserve's labeling page: the server's suggestions as a grid, labeled with clicks or keys,
// sent to the same /v1 API every client uses (with the same credentials).
// No build step and no dependencies: the server ships this file as it is.

const SOURCE = "label-page";
const BATCH = 12;
const POLL_MS = 4000;
// One key per class: a one-character label gets its own key when it can; the rest take
// the next free one. Space, Enter, Backspace, arrows and "/" are the page's controls.
const KEYS = "1234567890abcdefghijklmnopqrstuvwxyz";

const $ = (id) => document.getElementById(id);

// The page labels one model, named by its path (/label/<model>). /label itself lists the
// models the credential may use, or opens the one model when there is only one.
const PAGE = "/label";
const pageModel = decodeURIComponent(location.pathname.slice(PAGE.length).replace(/^\/+|\/+$/g, ""));

const state = {
  token: sessionStorage.getItem("tlserve.token") || "",
  model: pageModel, // "" until the chooser has found the one model
  classes: [], // [{label, key}]
  cards: [], // the current grid
  focus: 0,
  undo: [], // [{card, kind: "label" | "skip"}]
  skipped: new Set(),
  done: new Set(), // prediction ids labeled from this page (the server hides them anyway)
  servedVersion: null,
  curveSignature: "",
  loading: false,
};

// ---- the API ---------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, message, code) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function api(path, body) {
  const headers = {};
  if (state.token) headers.Authorization = `Bearer ${state.token}`;
  const init = { headers, method: body === undefined ? "GET" : "POST" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  const document = await response.json().catch(() => ({}));
  if (response.ok) return document;
  if (response.status === 401) showSignIn(document.error);
  throw new ApiError(response.status, document.error || response.statusText, document.code);
}

// A route of the page's model: /v1/models/<model><route>.
function modelApi(route, body) {
  return api(`/v1/models/${encodeURIComponent(state.model)}${route}`, body);
}

const skippedKey = () => `tlserve.skipped.${state.model}`;

function idempotencyKey() {
  // crypto.randomUUID needs a secure context; a page on plain http over the LAN has none.
  if (crypto.randomUUID) return crypto.randomUUID();
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

// ---- signing in --------------------------------------------------------------------------

function showSignIn(message) {
  $("workspace").hidden = true;
  $("chooser").hidden = true;
  $("sign-in").hidden = false;
  $("sign-in-error").textContent = state.token ? message || "" : "";
  $("token").focus();
}

// No such model (or none this credential may use): say so, and offer the list.
function showMissing(message) {
  $("sign-in").hidden = true;
  $("missing-message").textContent = message;
  $("missing").hidden = false;
}

$("sign-in-form").addEventListener("submit", (event) => {
  event.preventDefault();
  state.token = $("token").value.trim();
  sessionStorage.setItem("tlserve.token", state.token);
  $("token").value = "";
  start();
});

$("sign-out").addEventListener("click", () => {
  sessionStorage.removeItem("tlserve.token");
  state.token = "";
  showSignIn();
});

// ---- classes and keys ------------------------------------------------------------------

function addClasses(labels) {
  const known = new Set(state.classes.map((c) => c.label));
  const fresh = [...new Set(labels)].filter((label) => label && !known.has(label));
  if (!fresh.length) return;
  const taken = new Set(state.classes.map((c) => c.key));
  const keyed = [];
  for (const label of fresh) {
    const own = label.length === 1 ? label.toLowerCase() : "";
    if (own && KEYS.includes(own) && !taken.has(own)) {
      taken.add(own);
      keyed.push({ label, key: own });
    } else {
      keyed.push({ label, key: null });
    }
  }
  for (const entry of keyed) {
    if (entry.key) continue;
    const initial = entry.label[0].toLowerCase();
    entry.key = KEYS.includes(initial) && !taken.has(initial)
      ? initial
      : [...KEYS].find((key) => !taken.has(key)) || null;
    if (entry.key) taken.add(entry.key);
  }
  state.classes.push(...keyed);
  renderClasses();
}

function classOfKey(key) {
  return state.classes.find((c) => c.key === key.toLowerCase());
}

function renderClasses() {
  const bar = $("class-keys");
  bar.replaceChildren(
    ...state.classes.map(({ label, key }) => {
      const button = element("button", { class: "chip", "data-label": label });
      if (key) button.append(element("kbd", {}, key));
      button.append(element("span", {}, label));
      button.addEventListener("click", () => labelFocused(label));
      return button;
    }),
  );
}

// ---- the grid --------------------------------------------------------------------------

function element(tag, attributes = {}, text = "") {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  if (text) node.textContent = text;
  return node;
}

function renderCard(card) {
  const node = element("article", {
    class: "card",
    "data-prediction-id": card.id,
    "data-state": card.state,
    tabindex: "-1",
  });
  const image = element("img", {
    src: `data:image/png;base64,${card.png}`,
    alt: `Suggested image; the model's guess is ${card.top[0]?.label ?? "unknown"}`,
  });
  image.addEventListener("click", () => setFocus(state.cards.indexOf(card)));
  const guesses = element("ol", { class: "guesses" });
  for (const { label, score } of card.top.slice(0, 3)) {
    const button = element("button", { class: "guess", "data-label": label });
    button.append(element("span", { class: "name" }, label));
    button.append(element("span", { class: "score" }, `${Math.round(score * 100)}%`));
    button.style.setProperty("--score", String(score));
    button.addEventListener("click", () => labelCard(card, label));
    const item = element("li");
    item.append(button);
    guesses.append(item);
  }
  const verdict = element("p", { class: "verdict" });
  node.append(image, guesses, verdict);
  card.node = node;
  paintCard(card);
  return node;
}

function paintCard(card) {
  const node = card.node;
  node.dataset.state = card.state;
  node.classList.toggle("focused", state.cards[state.focus] === card);
  const verdict = node.querySelector(".verdict");
  verdict.textContent =
    card.state === "labeled" ? `✓ ${card.label}`
      : card.state === "skipped" ? "skipped"
        : card.state === "sending" ? "sending…"
          : card.error || "";
  for (const button of node.querySelectorAll(".guess")) {
    button.classList.toggle("chosen", card.state === "labeled" && button.dataset.label === card.label);
  }
}

function renderGrid() {
  $("grid").replaceChildren(...state.cards.map(renderCard));
  renderProgress();
}

function renderProgress() {
  const open = state.cards.filter((c) => c.state === "open").length;
  $("batch-progress").textContent = state.cards.length
    ? `${state.cards.length - open} of ${state.cards.length} in this batch done`
    : "";
  $("undo").disabled = state.undo.length === 0;
}

function setFocus(index) {
  if (index < 0 || index >= state.cards.length) return;
  const before = state.cards[state.focus];
  state.focus = index;
  if (before) paintCard(before);
  const card = state.cards[index];
  paintCard(card);
  card.node.scrollIntoView({ block: "nearest" });
}

function nextOpen(from) {
  for (let step = 1; step <= state.cards.length; step++) {
    const index = (from + step) % state.cards.length;
    if (state.cards[index].state === "open") return index;
  }
  return -1;
}

function advance() {
  renderProgress();
  const index = nextOpen(state.focus);
  if (index >= 0) {
    setFocus(index);
    return;
  }
  // The whole batch is done: once its labels are stored (so the server leaves them
  // out) and the person saw the last answer, the next batch.
  const batch = state.cards;
  Promise.all(batch.map((c) => c.pending)).then(() => {
    setTimeout(() => {
      if (state.cards === batch && batch.every((c) => c.state !== "open")) loadSuggestions();
    }, 400);
  });
}

async function loadSuggestions() {
  if (state.loading) return;
  state.loading = true;
  try {
    const wanted = BATCH + Math.min(state.skipped.size, 88);
    const reply = await modelApi(`/suggestions?count=${wanted}`);
    const fresh = reply.suggestions.filter(
      (s) => !state.skipped.has(s.prediction_id) && !state.done.has(s.prediction_id),
    );
    state.cards = fresh.slice(0, BATCH).map((s) => ({
      id: s.prediction_id,
      png: s.image_png_base64,
      top: s.top,
      version: s.model_version,
      state: "open",
    }));
    state.focus = 0;
    addClasses(state.cards.flatMap((c) => c.top.map((t) => t.label)));
    showEmpty(
      state.cards.length ? ""
        : "Nothing to label right now: every image the server kept is labeled or skipped. "
          + "Predictions made from now on will show up here.",
    );
  } catch (error) {
    state.cards = [];
    if (error.status !== 401) showEmpty(error.message);
  } finally {
    state.loading = false;
  }
  renderGrid();
  if (state.cards.length) setFocus(0);
}

function showEmpty(message) {
  $("empty").hidden = !message;
  $("empty").textContent = message;
}

// ---- labeling, skipping, undo ----------------------------------------------------------

function labelCard(card, label) {
  if (!card || card.state === "sending" || (card.state === "labeled" && card.label === label)) return;
  const before = { state: card.state, label: card.label };
  const entry = { card, kind: "label" };
  if (before.state !== "labeled") state.undo.push(entry);
  card.state = "sending";
  card.label = label;
  card.error = "";
  state.done.add(card.id);
  // Move on at once: a person labeling by keys types faster than the server answers.
  if (state.cards[state.focus] === card) advance();
  else setFocus(state.cards.indexOf(card));
  paintCard(card);
  card.pending = send(card, label).then(
    (stored) => {
      card.state = "labeled";
      card.label = stored.label;
      card.sampleId = stored.sample_id;
      addClasses([stored.label]);
      paintCard(card);
      renderProgress();
      refreshStats();
    },
    (error) => {
      Object.assign(card, before, { error: error.message });
      state.done.delete(card.id);
      state.undo = state.undo.filter((e) => e !== entry);
      paintCard(card);
      renderProgress();
      toast(error.message);
    },
  );
}

async function send(card, label) {
  const common = { label, source: SOURCE, idempotency_key: idempotencyKey() };
  try {
    return await modelApi("/feedback", { ...common, prediction_id: card.id });
  } catch (error) {
    // The kept prediction expired meanwhile: the image itself still carries the label.
    if (error.status !== 404) throw error;
    return modelApi("/feedback", { ...common, image_base64: card.png });
  }
}

function labelFocused(label) {
  labelCard(state.cards[state.focus], label);
}

function skip() {
  const card = state.cards[state.focus];
  if (!card || card.state !== "open") return;
  card.state = "skipped";
  state.skipped.add(card.id);
  sessionStorage.setItem(skippedKey(), JSON.stringify([...state.skipped].slice(-500)));
  state.undo.push({ card, kind: "skip" });
  paintCard(card);
  advance();
}

async function undo() {
  const last = state.undo.pop();
  if (!last) return;
  const { card, kind } = last;
  try {
    if (kind === "label") {
      await card.pending;
      if (card.state !== "labeled") return; // it failed to send: nothing to undo
      await modelApi("/labels/retract", { sample_id: card.sampleId });
      state.done.delete(card.id);
      toast(`Undone: ${card.label}`);
      refreshStats();
    } else {
      state.skipped.delete(card.id);
    }
  } catch (error) {
    state.undo.push(last);
    toast(error.message);
    return;
  }
  card.state = "open";
  card.label = undefined;
  if (!state.cards.includes(card)) {
    // Its batch is gone: bring it back at the front of this one.
    state.cards.unshift(card);
    renderGrid();
  }
  paintCard(card);
  renderProgress();
  setFocus(state.cards.indexOf(card));
}

$("undo").addEventListener("click", undo);
$("skip").addEventListener("click", skip);
$("more").addEventListener("click", loadSuggestions);

$("new-class-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const label = $("new-class").value.trim();
  if (!label) return;
  $("new-class").value = "";
  $("new-class").blur();
  addClasses([label]);
  labelFocused(label);
});

document.addEventListener("keydown", (event) => {
  if (event.target instanceof HTMLInputElement) {
    if (event.key === "Escape") event.target.blur();
    return;
  }
  if ($("workspace").hidden) return;
  const undoChord = (event.ctrlKey || event.metaKey) && event.key.toLowerCase() === "z";
  if ((event.ctrlKey || event.metaKey || event.altKey) && !undoChord) return;
  const card = state.cards[state.focus];
  const keyed = event.key.length === 1 ? classOfKey(event.key) : undefined;
  let handled = true;
  if (undoChord || event.key === "Backspace") undo();
  else if (event.key === "/") $("new-class").focus();
  else if (event.key === " ") skip();
  else if (event.key === "Enter" && card) labelCard(card, card.top[0].label);
  else if (event.key === "ArrowRight" || event.key === "ArrowDown") setFocus(state.focus + 1);
  else if (event.key === "ArrowLeft" || event.key === "ArrowUp") setFocus(state.focus - 1);
  else if (keyed) labelFocused(keyed.label);
  else handled = false;
  if (handled) event.preventDefault();
});

// ---- progress ---------------------------------------------------------------------------

function percent(value) {
  return `${(value * 100).toFixed(1)}%`;
}

function localMidnight() {
  const now = new Date();
  return new Date(now.getFullYear(), now.getMonth(), now.getDate()).getTime() / 1000;
}

async function refreshStats() {
  try {
    const labels = await modelApi(`/labels?added_after=${localMidnight()}`);
    $("labels-today").textContent = String(labels.labels_added);
    $("labels-today").title = `${labels.total_samples} labeled in all`;
    addClasses(labels.labels.map((l) => l.label));
  } catch (error) {
    if (error.status === 401) return;
  }
  let training = null;
  try {
    const model = await modelApi("/model");
    addClasses(model.labels);
    training = model.training;
    $("served-version").textContent = model.version;
    $("live-accuracy").textContent = model.live_feedback_count
      ? `${percent(model.live_accuracy)} of ${model.live_feedback_count}`
      : "no feedback yet";
    showMonitoring(model.monitoring);
    showExperiment(model.experiment);
    if (state.servedVersion && state.servedVersion !== model.version) {
      toast(`Now serving ${model.version}`);
    }
    state.servedVersion = model.version;
  } catch (error) {
    if (error.status === 401) return;
    $("served-version").textContent = "none yet";
    $("live-accuracy").textContent = "–";
    training = await modelApi("/training").catch(() => null);
  }
  if (training) {
    $("trainer-state").textContent = training.stale ? `${training.state}, not reporting` : training.state;
    $("trainer-state").title = training.detail || training.next_trigger || "";
  }
  refreshCurve();
}

// Expected accuracy of recent answers (calibrated confidence, no labels) and the drift test.
function showMonitoring(monitoring) {
  const estimate = $("estimated-accuracy");
  const drift = $("drift-state");
  if (!monitoring) {
    estimate.textContent = drift.textContent = "–";
    return;
  }
  estimate.textContent = monitoring.estimated_from
    ? `${percent(monitoring.estimated_accuracy)} of ${monitoring.estimated_from}`
    : "no answers yet";
  estimate.title = "Expected share right of the latest answers, from their calibrated confidence";
  drift.textContent = monitoring.drift_state;
  drift.dataset.state = monitoring.drift_state;
  drift.title = monitoring.drift_p_value === null
    ? "Live images against the training images: needs a full window of predictions"
    : `p ${monitoring.drift_p_value.toPrecision(2)} on the last ${monitoring.drift_window} predictions`;
}

function showExperiment(experiment) {
  const stat = $("experiment-stat");
  stat.hidden = !experiment;
  if (!experiment) return;
  const evidence = experiment.evidence;
  const pairs = evidence ? `${evidence.wins}–${evidence.losses} on ${evidence.pairs} pairs` : "no pairs yet";
  $("experiment").textContent = `${experiment.state}: ${pairs}`;
  $("experiment").title = `${experiment.challenger_version} (${experiment.rollout}) against `
    + `${experiment.champion_version}` + (experiment.reason ? `: ${experiment.reason}` : "");
}

// A 95% Wilson interval for a holdout accuracy measured on `samples` images.
function wilson(accuracy, samples) {
  if (!samples) return [0, 1];
  const z = 1.96;
  const centre = (accuracy + (z * z) / (2 * samples)) / (1 + (z * z) / samples);
  const half = (z / (1 + (z * z) / samples))
    * Math.sqrt((accuracy * (1 - accuracy)) / samples + (z * z) / (4 * samples * samples));
  return [Math.max(0, centre - half), Math.min(1, centre + half)];
}

async function refreshCurve() {
  let listing;
  try {
    listing = await modelApi("/versions");
  } catch {
    return;
  }
  const models = listing.models.filter((m) => !m.error);
  const signature = models.map((m) => `${m.version}:${m.live_feedback_count}`).join() + listing.current_version;
  if (signature === state.curveSignature) return;
  state.curveSignature = signature;
  drawCurve(models, listing.current_version);
}

function drawCurve(models, current) {
  const points = models
    .map((m) => {
      const dataset = m.card?.dataset ?? {};
      return {
        version: m.version,
        created: Date.parse(m.created_at) || 0,
        labels: (dataset.train ?? 0) + (dataset.holdout ?? 0),
        holdout: m.card?.metrics?.holdout?.accuracy ?? null,
        holdoutSamples: m.card?.metrics?.holdout?.samples ?? 0,
        live: m.live_feedback_count ? m.live_accuracy : null,
        current: m.version === current,
      };
    })
    .sort((a, b) => a.created - b.created);
  const svg = $("curve");
  const ns = "http://www.w3.org/2000/svg";
  const shape = (tag, attributes, text) => {
    const node = document.createElementNS(ns, tag);
    for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
    if (text) node.textContent = text;
    return node;
  };
  const [left, right, top, bottom] = [40, 350, 10, 150];
  const maxLabels = Math.max(10, ...points.map((p) => p.labels));
  const x = (labels) => left + ((right - left) * labels) / maxLabels;
  const y = (accuracy) => bottom - (bottom - top) * accuracy;
  const children = [
    shape("line", { x1: left, y1: bottom, x2: right, y2: bottom, class: "axis" }),
    shape("line", { x1: left, y1: top, x2: left, y2: bottom, class: "axis" }),
    shape("text", { x: left - 6, y: y(1) + 4, class: "tick", "text-anchor": "end" }, "100%"),
    shape("text", { x: left - 6, y: y(0.5) + 4, class: "tick", "text-anchor": "end" }, "50%"),
    shape("text", { x: left - 6, y: bottom + 4, class: "tick", "text-anchor": "end" }, "0%"),
    shape("text", { x: right, y: bottom + 22, class: "tick", "text-anchor": "end" }, `${maxLabels} labels`),
  ];
  const judged = points.filter((p) => p.holdout !== null);
  if (judged.length) {
    children.push(shape("polyline", {
      class: "holdout",
      points: judged.map((p) => `${x(p.labels)},${y(p.holdout)}`).join(" "),
    }));
  }
  for (const p of judged) {
    // A holdout of a few dozen images cannot tell 85% from 95%: the bar says so.
    const [low, high] = wilson(p.holdout, p.holdoutSamples);
    children.push(shape("line", {
      x1: x(p.labels), x2: x(p.labels), y1: y(low), y2: y(high), class: "holdout-interval",
    }));
    const dot = shape("circle", { cx: x(p.labels), cy: y(p.holdout), r: p.current ? 5 : 3, class: "holdout-dot" });
    dot.append(shape("title", {}, `${p.version}: ${percent(p.holdout)} on ${p.holdoutSamples} holdout `
      + `images (95%: ${percent(low)}–${percent(high)}), ${p.labels} labels`));
    children.push(dot);
  }
  for (const p of points.filter((q) => q.live !== null)) {
    const dot = shape("rect", { x: x(p.labels) - 3, y: y(p.live) - 3, width: 6, height: 6, class: "live-dot" });
    dot.append(shape("title", {}, `${p.version}: ${percent(p.live)} live`));
    children.push(dot);
  }
  svg.replaceChildren(...children);
  svg.dataset.versions = String(points.length);
  const versions = `${points.length} version${points.length === 1 ? "" : "s"}`;
  $("curve-note").textContent = !points.length
    ? "No version published yet."
    : judged.length
      ? `${versions}: line = holdout accuracy by labels trained on (bars: its 95% interval on so `
        + "few images), squares = live accuracy from feedback."
      : `${versions}; squares = live accuracy from feedback. Holdout accuracy appears once classes `
        + "have enough labels to hold some out.";
}

// ---- start -------------------------------------------------------------------------------

let toastTimer = 0;
function toast(message) {
  const node = $("toast");
  node.textContent = message;
  node.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { node.hidden = true; }, 4000);
}

// The models this credential may use, as links to their pages; true when it showed them.
async function chooseModel() {
  const { models } = await api("/v1/served-models");
  if (models.length === 1) {
    state.model = models[0].name;
    history.replaceState(null, "", `${PAGE}/${encodeURIComponent(state.model)}`);
    return false;
  }
  const list = $("model-list");
  list.replaceChildren(
    ...models.map((m) => {
      const link = element("a", { href: `${PAGE}/${encodeURIComponent(m.name)}` }, m.name);
      const note = `${m.version || "nothing served yet"}${m.is_default ? " · default" : ""}`;
      const item = element("li");
      item.append(link, element("span", { class: "hint" }, ` ${note}`));
      return item;
    }),
  );
  $("chooser-empty").hidden = models.length > 0;
  $("sign-in").hidden = true;
  $("chooser").hidden = false;
  $("sign-out").hidden = !state.token;
  return true;
}

let polling = 0;
async function start() {
  try {
    if (!state.model && (await chooseModel())) return;
    await modelApi("/labels");
  } catch (error) {
    if (error.status !== 401) toast(error.message);
    if (error.status === 401) return;
    if (error.status === 404) return showMissing(error.message);
  }
  $("model-name").textContent = state.model;
  document.title = `tlserve · label · ${state.model}`;
  state.skipped = new Set(JSON.parse(sessionStorage.getItem(skippedKey()) || "[]"));
  $("sign-in").hidden = true;
  $("workspace").hidden = false;
  $("sign-out").hidden = !state.token;
  await Promise.all([refreshStats(), loadSuggestions()]);
  clearInterval(polling);
  polling = setInterval(refreshStats, POLL_MS);
}

start();
