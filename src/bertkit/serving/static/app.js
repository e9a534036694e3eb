// The page of `bertkit serve`: pick a served model, give it an input its task understands, see the answer drawn
// (label bars, entities in the text, the answer in its context, mask candidates, similarity bars, a vector).
// It speaks only the server's public API (GET /info, POST /models/{name}), so what it shows is what a client gets.
"use strict";

const $ = (id) => document.getElementById(id);

// Builds an element: el("div", {class: "x", dataset: {label: "a"}}, child, "text", ...).
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null) continue;
    if (key === "dataset") Object.assign(node.dataset, value);
    else if (key === "style") node.style.cssText = value;
    else if (key in node && typeof value !== "string") node[key] = value;
    else node.setAttribute(key, value);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}

const fmt = (x, digits = 3) => (typeof x === "number" ? x.toFixed(digits) : String(x));
const pct = (x) => `${(Math.max(0, Math.min(1, x)) * 100).toFixed(1)}%`;

// A labelled bar: the score as text and as a width (scores outside [0, 1] are clipped for the width only).
function bar(score, className = "fill") {
  return el("div", {class: "track"}, el("div", {class: className, style: `width: ${pct(score)}`}));
}

// Entity colours: the usual types keep theirs on every model, others take the palette in label order.
const FIXED_COLOURS = {PER: "#8b5cf6", LOC: "#f59e0b", ORG: "#14b8a6", MISC: "#ec4899"};
const PALETTE = ["#3b82f6", "#22c55e", "#f97316", "#ef4444", "#84cc16", "#a855f7", "#06b6d4", "#eab308"];
const entityType = (label) => String(label).replace(/^[BIESLU]-/, "");

function entityColours(types) {
  const colours = {};
  let next = 0;
  for (const type of types) {
    if (!(type in colours)) colours[type] = FIXED_COLOURS[type] || PALETTE[next++ % PALETTE.length];
  }
  return colours;
}

// Each task: the fields it reads, an example to start from, the request body, and how to draw the response.
// `sent` is what the request was built from, so the drawing never reads fields the user has edited since.
const TASKS = {
  "text-classification": {
    fields: ["text"],
    example: {text: "I loved this film: the acting is superb and the story kept me hooked until the very end."},
    body: (v, model) => ({inputs: v.text, parameters: {top_k: model.labels ? model.labels.length : null}}),
    render: renderClassification,
  },
  "token-classification": {
    fields: ["text"],
    example: {text: "Angela Merkel met Emmanuel Macron in Paris before flying back to Berlin."},
    body: (v) => ({inputs: v.text, parameters: {aggregation_strategy: "simple"}}),
    render: renderEntities,
  },
  "question-answering": {
    fields: ["question", "context"],
    example: {
      question: "When was the Eiffel Tower completed?",
      context: "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, France. " +
        "It is named after the engineer Gustave Eiffel, whose company designed and built it; " +
        "it was completed in 1889 as the entrance arch of the World's Fair.",
    },
    body: (v) => ({inputs: {question: v.question, context: v.context}}),
    render: renderAnswer,
  },
  "fill-mask": {
    fields: ["text"],
    example: {text: "Paris is the [MASK] of France."},
    hint: (model) => `Put ${maskToken(model)} where a word is missing.`,
    body: (v) => ({inputs: v.text, parameters: {top_k: 5}}),
    render: renderCandidates,
  },
  "sentence-similarity": {
    fields: ["source", "sentences"],
    example: {
      source: "A man is playing a guitar.",
      sentences: "Someone is playing an instrument.\nA man plays the guitar on stage.\n" +
        "A woman is slicing vegetables in the kitchen.\nThe stock market fell sharply today.",
    },
    body: (v) => ({inputs: {source_sentence: v.source, sentences: lines(v.sentences)}}),
    render: renderSimilarity,
  },
  "feature-extraction": {
    fields: ["text", "normalize"],
    example: {text: "bertkit turns sentences into vectors."},
    body: (v) => ({inputs: v.text, normalize: v.normalize}),
    render: renderVector,
  },
};
// An embedding model serves both; similarity is the one a person can read.
const TASK_PREFERENCE = ["sentence-similarity", "feature-extraction"];

const lines = (text) => text.split("\n").map((s) => s.trim()).filter(Boolean);
const maskToken = (model) => (model && model.mask_token) || "[MASK]";
const EXAMPLES = new Set(Object.values(TASKS).flatMap((t) => Object.values(t.example)));

const state = {models: [], model: null, task: null, last: null, controller: null, runs: 0};

function fieldValues() {
  return {
    text: $("text").value, question: $("question").value, context: $("context").value,
    source: $("source").value, sentences: $("sentences").value, normalize: $("normalize").checked,
  };
}

// Shows the fields of the chosen task; a field still holding an example (or nothing) gets this task's example.
function showTask(task) {
  state.task = task;
  const spec = TASKS[task];
  for (const node of document.querySelectorAll("[data-field]")) {
    node.hidden = !spec || !spec.fields.includes(node.dataset.field);
  }
  if (!spec) {
    $("run").disabled = true;
    showError({error: `this page does not know the task ${task}; use the API (see /docs)`, error_type: "page"});
    return;
  }
  $("run").disabled = false;
  for (const [field, value] of Object.entries(spec.example)) {
    const input = $(field);
    if (!input.value.trim() || EXAMPLES.has(input.value)) input.value = value;
  }
  $("text-hint").textContent = spec.hint ? spec.hint(state.model) : "";
}

function chooseModel(name) {
  const model = state.models.find((m) => m.name === name) || state.models[0];
  state.model = model;
  $("model").value = model.name;
  const tasks = (model.tasks && model.tasks.length ? model.tasks : [model.task]);
  const select = $("task");
  select.replaceChildren(...tasks.map((t) => el("option", {value: t}, t)));
  $("task-picker").hidden = tasks.length < 2;
  const task = TASK_PREFERENCE.find((t) => tasks.includes(t)) || model.task || tasks[0];
  select.value = task;
  const facts = [tasks.join(" + ")];
  if (model.labels) facts.push(`${model.labels.length} labels`);
  if (model.backend) facts.push(`${model.backend} on ${model.device || "?"}`);
  if (model.max_length) facts.push(`up to ${model.max_length} tokens`);
  $("model-info").textContent = facts.join(" · ");
  history.replaceState(null, "", `#${encodeURIComponent(model.name)}`);
  clearOutput();
  showTask(task);
}

function clearOutput() {
  hideError();
  $("result").replaceChildren(el("p", {class: "muted placeholder"}, "Press Run."));
  $("latency").textContent = "";
  state.last = null;
}

function showError(body, status) {
  const box = $("error");
  box.replaceChildren(
    el("strong", {class: "error-type"}, body.error_type || (status ? `HTTP ${status}` : "error")),
    status ? el("span", {class: "status"}, ` ${status}`) : null,
    el("p", {class: "error-message"}, body.error || "no message"),
  );
  box.hidden = false;
}

function hideError() {
  $("error").hidden = true;
  $("error").replaceChildren();
}

function curlFor(url, body) {
  const quoted = JSON.stringify(body).replace(/'/g, "'\\''");
  const auth = sessionStorage.getItem(KEY) ? "  -H \"authorization: Bearer $BERTKIT_API_KEY\" \\\n" : "";
  return `curl -s ${new URL(url, location.href).href} \\\n  -H 'content-type: application/json' \\\n${auth}` +
    `  -d '${quoted}'`;
}

// A response header in milliseconds, as text, or null.
function ms(headers, name) {
  const value = headers.get(name);
  return value === null || value === "" || isNaN(Number(value)) ? null : `${Number(value).toFixed(1)} ms`;
}

async function run() {
  const {model, task} = state;
  const spec = TASKS[task];
  if (!model || !spec) return;
  const values = fieldValues();
  const empty = spec.fields.find((f) => f !== "normalize" && !values[f].trim());
  const result = $("result");
  if (empty) {
    finish(false);
    showError({error: `the ${empty} field is empty`, error_type: "input"});
    return;
  }
  const body = spec.body(values, model);
  // The task in the path: an embedding model serves two, and it names the task in the error when one is wrong.
  const url = `models/${encodeURIComponent(model.name)}/pipeline/${encodeURIComponent(task)}`;
  $("curl").textContent = curlFor(url, body);
  if (state.controller) state.controller.abort();
  const controller = new AbortController();
  state.controller = controller;
  result.dataset.status = "running";
  $("run").classList.add("busy");
  hideError();
  const started = performance.now();
  let response, payload;
  try {
    response = await fetch(url, {
      method: "POST", headers: headers({"content-type": "application/json", accept: "application/json"}),
      body: JSON.stringify(body), signal: controller.signal,
    });
    const raw = await response.text();
    try {
      payload = JSON.parse(raw);
    } catch {
      payload = {error: raw.slice(0, 300) || response.statusText, error_type: "not JSON"};
    }
  } catch (err) {
    if (err.name === "AbortError") return;  // a newer run replaced this one
    finish(false);
    showError({error: `could not reach the server (${err.message})`, error_type: "network"});
    return;
  }
  if (state.controller !== controller) return;
  state.controller = null;
  const roundTrip = `${(performance.now() - started).toFixed(1)} ms`;
  const total = ms(response.headers, "x-total-time-ms");
  const latency = $("latency");
  latency.textContent = total ? `${total} on the server` : `${roundTrip} round trip`;
  latency.title = ["x-queue-time-ms", "x-tokenization-time-ms", "x-inference-time-ms", "x-total-time-ms"]
    .map((h) => `${h.slice(2, -8)}: ${ms(response.headers, h) ?? "-"}`).concat(`round trip: ${roundTrip}`)
    .join("\n");
  if (response.status === 401) {
    finish(false);
    askForKey(payload);
    return;
  }
  if (!response.ok) {
    finish(false);
    showError(payload && typeof payload === "object" && !Array.isArray(payload) ? payload :
      {error: JSON.stringify(payload)}, response.status);
    return;
  }
  state.last = {task, model, sent: values, response: payload};
  try {
    draw();
    finish(true);
  } catch (err) {
    finish(false);
    showError({error: `the page could not draw this response (${err.message})`, error_type: "page"});
  }
}

function draw() {
  const {task, model, sent, response} = state.last;
  $("result").replaceChildren(...[TASKS[task].render(response, sent, model)].flat());
}

// Marks the run finished for anyone watching (a test waits for data-run to change).
function finish(ok) {
  $("run").classList.remove("busy");
  const result = $("result");
  if (!ok) result.replaceChildren();
  result.dataset.status = ok ? "done" : "error";
  result.dataset.run = String(++state.runs);
}

// ---- the drawings, one per task ----

function renderClassification(response) {
  // [[{label, score}, ...]]: one list per input, best first (a flat list is accepted too).
  const ranked = Array.isArray(response[0]) ? response[0] : Array.isArray(response) ? response : [response];
  return el("div", {class: "bars", dataset: {testid: "labels"}}, ranked.map((item, i) =>
    el("div", {class: `label-bar${i === 0 ? " best" : ""}`, dataset: {label: item.label, score: item.score}},
      el("span", {class: "name", title: item.label}, item.label),
      bar(item.score),
      el("span", {class: "value"}, pct(item.score)))));
}

function renderEntities(response, sent, model) {
  const text = sent.text;
  const entities = [...response].sort((a, b) => a.start - b.start);
  const known = (model.labels || []).map(entityType).filter((t) => t !== "O");
  const found = entities.map((e) => entityType(e.entity_group ?? e.entity));
  const colours = entityColours([...known, ...found]);
  const view = el("p", {class: "text-view", dataset: {testid: "entities"}});
  let at = 0;
  for (const e of entities) {
    if (e.start < at) continue;  // overlapping spans: the first one wins
    const type = entityType(e.entity_group ?? e.entity);
    view.append(text.slice(at, e.start));
    view.append(el("mark", {
      class: "entity", title: `${type} · score ${fmt(e.score)}`, style: `--c: ${colours[type]}`,
      dataset: {entity: type, score: e.score, start: e.start, end: e.end},
    }, text.slice(e.start, e.end)));
    at = e.end;
  }
  view.append(text.slice(at));
  const counts = {};
  for (const type of found) counts[type] = (counts[type] || 0) + 1;
  const legend = el("div", {class: "legend", dataset: {testid: "legend"}}, Object.keys(colours).map((type) =>
    el("span", {class: "legend-item", dataset: {entity: type}, style: `--c: ${colours[type]}`},
      el("span", {class: "swatch"}), `${type} `, el("small", {class: "muted"}, String(counts[type] || 0)))));
  const table = entities.length ? el("table", {class: "entity-table"},
    el("thead", {}, el("tr", {}, el("th", {}, "entity"), el("th", {}, "type"), el("th", {}, "score"),
      el("th", {}, "chars"))),
    el("tbody", {}, entities.map((e) => el("tr", {},
      el("td", {}, text.slice(e.start, e.end)), el("td", {}, entityType(e.entity_group ?? e.entity)),
      el("td", {class: "num"}, fmt(e.score)), el("td", {class: "num muted"}, `${e.start}–${e.end}`))))) :
    el("p", {class: "muted"}, "No entities found.");
  return [legend, view, table];
}

function renderAnswer(response, sent) {
  const best = Array.isArray(response) ? response[0] : response;
  const context = sent.context;
  if (!best || best.start === best.end) {
    return el("p", {class: "muted", dataset: {testid: "no-answer"}}, "No answer found in the context.");
  }
  const summary = el("div", {class: "answer-box"},
    el("span", {class: "muted"}, "Answer"),
    el("strong", {id: "answer", dataset: {testid: "answer"}}, best.answer),
    el("div", {class: "label-bar answer-score", dataset: {score: best.score}},
      el("span", {class: "name"}, "score"), bar(best.score), el("span", {class: "value"}, pct(best.score))));
  const view = el("p", {class: "text-view context-view"},
    context.slice(0, best.start),
    el("mark", {class: "answer", title: `score ${fmt(best.score)}`,
      dataset: {score: best.score, start: best.start, end: best.end}}, context.slice(best.start, best.end)),
    context.slice(best.end));
  return [summary, view];
}

function renderCandidates(response, sent, model) {
  // One list of candidates per [MASK]; a text with one mask gets the list itself.
  const groups = Array.isArray(response[0]) ? response : [response];
  const mask = maskToken(model);
  const pieces = sent.text.split(mask);
  const chosen = groups.map((g) => g[0]);
  const filled = el("p", {class: "text-view filled", id: "filled", dataset: {testid: "filled"}});
  const fill = () => {
    filled.replaceChildren();
    pieces.forEach((piece, i) => {
      filled.append(piece);
      if (i < pieces.length - 1) {
        const c = chosen[i];
        const word = c ? c.token_str.replace(/^##/, "") : mask;
        filled.append(el("mark", {class: "fill", title: c ? c.sequence : ""}, word));
      }
    });
  };
  fill();
  const lists = groups.map((group, g) => el("div", {class: "candidates"},
    groups.length > 1 ? el("h3", {}, `${mask} ${g + 1}`) : null,
    group.map((c, i) => {
      const row = el("div", {
        class: `candidate label-bar${i === 0 ? " best" : ""}`, title: c.sequence, tabindex: "0",
        dataset: {token: c.token_str, tokenId: c.token, score: c.score, sequence: c.sequence, mask: g},
      }, el("span", {class: "name"}, c.token_str), bar(c.score), el("span", {class: "value"}, pct(c.score)));
      // Pointing at a candidate puts it in the sentence above.
      const show = () => { chosen[g] = c; fill(); };
      row.addEventListener("mouseenter", show);
      row.addEventListener("focus", show);
      return row;
    })));
  const reset = () => { groups.forEach((group, g) => { chosen[g] = group[0]; }); fill(); };
  const wrapper = el("div", {}, lists);
  wrapper.addEventListener("mouseleave", reset);
  return [filled, wrapper];
}

function renderSimilarity(response, sent) {
  const sentences = lines(sent.sentences);
  const rows = sentences.map((sentence, i) => ({sentence, i, score: response[i]}));
  const sorted = $("sort-similarity") ? $("sort-similarity").checked : true;
  if (sorted) rows.sort((a, b) => b.score - a.score);
  const best = Math.max(...rows.map((r) => r.score));
  const toggle = el("label", {class: "check"},
    el("input", {type: "checkbox", id: "sort-similarity", checked: sorted, onchange: draw}), " sort by score");
  return [
    el("div", {class: "result-head"}, el("p", {class: "source"}, el("span", {class: "muted"}, "Similar to "),
      el("q", {}, sent.source)), toggle),
    el("div", {class: "bars similarity-bars", dataset: {testid: "similarities"}}, rows.map((r) =>
      el("div", {class: `similarity label-bar${r.score === best ? " best" : ""}`,
        dataset: {index: r.i, sentence: r.sentence, score: r.score}},
        el("span", {class: "name wide", title: r.sentence}, r.sentence), bar(r.score),
        el("span", {class: "value"}, fmt(r.score))))),
  ];
}

function renderVector(response) {
  // One text gives one vector; a nested list is per token or per input: draw its first row and say so.
  let vector = response;
  let shape = [response.length];
  while (Array.isArray(vector[0])) {
    shape = [...shape.slice(0, -1), vector.length, vector[0].length];
    vector = vector[0];
  }
  const norm = Math.sqrt(vector.reduce((s, x) => s + x * x, 0));
  const strip = el("canvas", {class: "strip", width: vector.length, height: 1,
    title: "every dimension: blue < 0 < red"});
  const ctx = strip.getContext("2d");
  const scale = Math.max(...vector.map(Math.abs)) || 1;
  vector.forEach((x, i) => {
    const a = Math.min(1, Math.abs(x) / scale);
    ctx.fillStyle = x < 0 ? `rgba(59, 130, 246, ${a})` : `rgba(239, 68, 68, ${a})`;
    ctx.fillRect(i, 0, 1, 1);
  });
  const copy = el("button", {type: "button", class: "small", onclick: () => {
    navigator.clipboard.writeText(JSON.stringify(vector)).then(() => { copy.textContent = "copied"; });
  }}, "copy vector");
  return [
    el("div", {class: "result-head"},
      el("p", {}, el("strong", {id: "dims", dataset: {testid: "dims", dims: vector.length}}, `${vector.length}`),
        " dimensions",
        shape.length > 1 ? el("span", {class: "muted"}, ` (response shape ${shape.join(" × ")})`) : null,
        el("span", {class: "muted"}, ` · L2 norm ${fmt(norm)}`)), copy),
    strip,
    el("ol", {class: "values", start: "0", dataset: {testid: "values"}}, vector.slice(0, 16).map((x, i) =>
      el("li", {class: "value", dataset: {index: i, value: x}}, fmt(x, 4)))),
    vector.length > 16 ? el("p", {class: "muted"}, `… and ${vector.length - 16} more`) : null,
  ].filter(Boolean);
}

// ---- start ----

function start() {
  $("form").addEventListener("submit", (e) => { e.preventDefault(); run(); });
  $("form").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); run(); }
  });
  $("model").addEventListener("change", () => chooseModel($("model").value));
  $("task").addEventListener("change", () => { clearOutput(); showTask($("task").value); });
  $("api-key").addEventListener("keydown", (e) => {
    if (e.key !== "Enter") return;
    e.preventDefault();
    e.stopPropagation();
    sessionStorage.setItem(KEY, $("api-key").value.trim());
    loadModels();
  });
  $("api-key").value = sessionStorage.getItem(KEY) || "";
  loadModels();
}

// A server started with --api-key wants `Authorization: Bearer KEY` on every route the page uses.
const KEY = "bertkit-serve-api-key";
function headers(extra = {}) {
  const key = sessionStorage.getItem(KEY);
  return key ? {...extra, authorization: `Bearer ${key}`} : extra;
}

function askForKey(body) {
  $("key-field").hidden = false;
  showError(body, 401);
  $("api-key").focus();
}

async function loadModels() {
  hideError();
  let response, info;
  try {
    response = await fetch("info", {headers: headers({accept: "application/json"})});
    info = await response.json();
  } catch (err) {
    showError({error: `could not read /info (${err.message})`, error_type: "network"});
    return;
  }
  if (response.status === 401) {
    askForKey(info);
    return;
  }
  if (!response.ok) {
    showError(info, response.status);
    return;
  }
  $("version").textContent = info.bertkit ? `v${info.bertkit}` : "";
  state.models = info.models || [];
  if (!state.models.length) {
    showError({error: "the server has no models", error_type: "config"});
    return;
  }
  $("model").replaceChildren(...state.models.map((m) =>
    el("option", {value: m.name, dataset: {task: m.task}}, `${m.name} (${m.task})`)));
  const wanted = decodeURIComponent(location.hash.slice(1));
  chooseModel(state.models.some((m) => m.name === wanted) ? wanted : state.models[0].name);
  $("key-field").hidden = !sessionStorage.getItem(KEY);
  document.body.dataset.ready = "true";
}

start();
