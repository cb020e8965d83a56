// The inspection page of an rnnlab run: one script for both ways the page is shown.
//
// Served by `rnnlab serve`, it asks the server's JSON API (rnnlab/serve.py) and streams
// generated text. In the file `rnnlab inspect --html` writes, the same data is embedded in
// the JSON script element with id "page-data", and there is no generation and no
// new text to read. Either way the data comes through a "source" with the same methods.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);

  // ------------------------------------------------------------ where the data comes from

  function serverSource() {
    async function failure(response) {
      const body = await response.json().catch(() => ({}));
      return new Error(body.error || `${response.status} ${response.statusText}`);
    }
    async function call(path, params) {
      const response = await fetch(path, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(params || {}),
      });
      if (!response.ok) throw await failure(response);
      return response.json();
    }
    return {
      live: true,
      info: () => call("api/info"),
      read: (text) => call("api/read", { text }),
      unit: (text, layer, kind, unit) => call("api/unit", { text, layer, kind, unit }),
      rank: (text, feature, pattern) =>
        call("api/rank", feature === "regex" ? { text, feature, pattern } : { text, feature }),
      training: () => call("api/training"),
      // Calls onText with each piece of text as it arrives.
      async generate(params, onText, signal) {
        const response = await fetch("api/generate", {
          method: "POST",
          headers: { "Content-Type": "application/json" },
          body: JSON.stringify(params),
          signal,
        });
        if (!response.ok) throw await failure(response);
        const reader = response.body.getReader();
        const decoder = new TextDecoder(); // stream: a character split between chunks waits
        for (;;) {
          const { done, value } = await reader.read();
          if (done) break;
          onText(decoder.decode(value, { stream: true }));
        }
        onText(decoder.decode());
      },
    };
  }

  function embeddedSource(data) {
    return {
      live: false,
      info: async () => data.info,
      read: async () => data.reading,
      unit: async (text, layer, kind, unit) => ({ values: data.activations[kind + layer][unit] }),
      rank: async (text, feature) => ({ units: data.rankings[feature] }),
      training: async () => data.training,
    };
  }

  const embedded = $("page-data");
  const source = embedded ? embeddedSource(JSON.parse(embedded.textContent)) : serverSource();
  const state = { info: null, text: null, reading: null };

  // ------------------------------------------------------------ small helpers

  function setStatus(id, message, isError) {
    const line = $(id);
    line.textContent = message || "";
    line.classList.toggle("error", Boolean(isError));
  }

  function element(tag, attributes, text) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes || {})) node.setAttribute(name, value);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // An element in the SVG namespace (taken from page.html's <svg>, which has it).
  function svgElement(tag, attributes, parent) {
    const node = document.createElementNS($("curve").namespaceURI, tag);
    for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
    parent.appendChild(node);
    return node;
  }

  // A token in running text: a line break shows as ↵ and still breaks the line.
  const tokenText = (token) => (token === "\n" ? "↵\n" : token);
  // A token on its own (in a list): white space made visible.
  const tokenLabel = (token) =>
    token === "\n" ? "↵" : token === " " ? "␣" : token.replace(/\t/g, "→").replace(/ /g, "␣");

  // Token spans in ``container``; words mode puts a space between the words of a line.
  function renderTokens(container, tokens, decorate) {
    container.replaceChildren();
    const words = state.info.mode === "words";
    const spans = tokens.map((token, i) => {
      if (words && i > 0 && token !== "\n" && tokens[i - 1] !== "\n") container.append(" ");
      const span = element("span", { class: "token", "data-i": String(i) }, tokenText(token));
      decorate(span, i);
      container.appendChild(span);
      return span;
    });
    container.dataset.state = "ready";
    return spans;
  }

  // ------------------------------------------------------------ generate

  let generation = null; // the AbortController of the generation under way

  async function generate(event) {
    event.preventDefault();
    if (generation) generation.abort();
    const controller = new AbortController();
    generation = controller;
    const out = $("generated");
    out.replaceChildren();
    out.dataset.state = "running";
    setStatus("generate-status", "Generating…");
    $("stop-button").disabled = false;
    const params = {
      prefix: $("prefix").value,
      length: $("length").value,
      temperature: $("temperature").value,
      top_k: $("top-k").value,
      seed: $("seed").value,
    };
    try {
      await source.generate(
        params,
        (piece) => {
          out.append(piece);
          out.scrollTop = out.scrollHeight;
        },
        controller.signal,
      );
      if (generation === controller) {
        out.dataset.state = "done";
        setStatus("generate-status", "");
      }
    } catch (error) {
      if (generation === controller) {
        out.dataset.state = error.name === "AbortError" ? "stopped" : "error";
        setStatus("generate-status", error.name === "AbortError" ? "Stopped." : error.message,
          error.name !== "AbortError");
      }
    } finally {
      if (generation === controller) {
        generation = null;
        $("stop-button").disabled = true;
      }
    }
  }

  // ------------------------------------------------------------ read with the model's eyes

  let readSpans = [];
  let current = -1; // the token whose predictions #top5 shows
  let reads = 0; // a later read wins over an earlier one still under way

  async function read() {
    const text = source.live ? $("text").value : state.info.text;
    const mine = ++reads;
    $("tokens").dataset.state = "loading";
    setStatus("read-status", "Reading…");
    try {
      const reading = await source.read(text);
      if (mine !== reads) return;
      state.text = text;
      state.reading = reading;
      showReading(reading);
      setStatus("read-status", "");
      showUnit();
    } catch (error) {
      if (mine !== reads) return;
      $("tokens").dataset.state = "error";
      setStatus("read-status", error.message, true);
    }
  }

  function showReading(reading) {
    const bits = reading.loss_bits;
    const nats = reading.loss_nats;
    $("loss").textContent = Number.isFinite(nats)
      ? `Loss on this passage: ${nats.toFixed(3)} nats = ${bits.toFixed(3)} bits per token ` +
        `(perplexity ${Math.exp(nats).toFixed(2)}) over ${reading.tokens.length - 1} predictions.`
      : "Loss on this passage: infinite (the model gave a token of it probability 0).";
    // Full shade: as surprised as a uniform guess over the vocabulary would be.
    const scale = Math.log(Math.max(2, state.info.vocab_size));
    readSpans = renderTokens($("tokens"), reading.tokens, (span, i) => {
      const p = reading.probs[i];
      span.tabIndex = i === 0 ? 0 : -1;
      if (p === null) {
        span.classList.add("first");
        return;
      }
      const shade = Math.min(1, -Math.log(Math.max(p, 1e-12)) / scale);
      span.style.backgroundColor = `rgba(217, 83, 79, ${(0.85 * shade).toFixed(3)})`;
    });
    current = -1;
    const panel = $("top5");
    panel.replaceChildren(element("p", { class: "help" }, "Hover over a token to see the " +
      "model's top 5 guesses for it."));
  }

  function showTop5(i) {
    const reading = state.reading;
    if (!reading || i === current) return;
    if (readSpans[current]) readSpans[current].classList.remove("current");
    current = i;
    readSpans[i].classList.add("current");
    const token = reading.tokens[i];
    const p = reading.probs[i];
    const panel = $("top5");
    panel.replaceChildren();
    if (p === null) {
      panel.appendChild(element("p", {}, `Token 1, “${tokenLabel(token)}”, is the first: ` +
        "nothing came before it to predict it from."));
      return;
    }
    const surprise = -Math.log2(Math.max(p, 1e-300));
    panel.appendChild(element("p", {}, `Token ${i + 1}, “${tokenLabel(token)}”: ` +
      `p = ${p.toPrecision(3)}, surprise ${surprise.toFixed(2)} bits. The model's top 5:`));
    const list = element("ol");
    for (const [guess, q] of reading.top[i]) {
      const item = element("li", guess === token ? { class: "actual" } : {});
      item.appendChild(element("code", {}, tokenLabel(guess)));
      item.appendChild(element("span", { class: "p" }, q.toFixed(3)));
      const bar = element("span", { class: "bar" });
      bar.style.width = `${(100 * q).toFixed(1)}%`;
      item.appendChild(bar);
      list.appendChild(item);
    }
    panel.appendChild(list);
  }

  function tokenIndex(event) {
    const span = event.target.closest && event.target.closest("span.token");
    return span ? Number(span.dataset.i) : -1;
  }

  function moveFocus(event) {
    const step = { ArrowRight: 1, ArrowDown: 1, ArrowLeft: -1, ArrowUp: -1 }[event.key];
    const i = tokenIndex(event);
    if (!step || i < 0 || !readSpans[i + step]) return;
    event.preventDefault();
    readSpans[i].tabIndex = -1;
    readSpans[i + step].tabIndex = 0; // one tab stop for the whole text: arrows move in it
    readSpans[i + step].focus();
  }

  // ------------------------------------------------------------ hidden units

  let unitRequests = 0;

  // Blue for -1, white for 0, red for +1.
  function unitColor(value) {
    const v = Math.max(-1, Math.min(1, value));
    const alpha = (0.85 * Math.abs(v)).toFixed(3);
    return v < 0 ? `rgba(31, 119, 180, ${alpha})` : `rgba(214, 39, 40, ${alpha})`;
  }

  async function showUnit(event) {
    if (event) event.preventDefault();
    if (!state.reading) return;
    const layer = Number($("layer").value);
    const kind = $("kind").value;
    const unit = Number($("unit").value);
    const mine = ++unitRequests;
    const box = $("unit-tokens");
    box.dataset.state = "loading";
    try {
      const { values } = await source.unit(state.text, layer, kind, unit);
      if (mine !== unitRequests) return;
      renderTokens(box, state.reading.tokens, (span, i) => {
        const value = values[i];
        span.style.backgroundColor = unitColor(kind === "c" ? Math.tanh(value) : value);
        span.title = `${kind}${layer}[${unit}] = ${value.toFixed(3)}`;
      });
      box.dataset.unit = `${layer}${kind}${unit}`;
      setStatus("units-status", "");
    } catch (error) {
      if (mine !== unitRequests) return;
      box.dataset.state = "error";
      setStatus("units-status", error.message, true);
    }
  }

  function pickFeature() {
    const feature = $("feature").value;
    $("pattern").disabled = feature !== "regex";
    $("feature-help").textContent = state.info.features[feature] || "";
  }

  async function rank(event) {
    event.preventDefault();
    const list = $("ranking");
    if (!state.reading) return;
    list.replaceChildren();
    list.dataset.state = "loading";
    setStatus("units-status", "Ranking…");
    try {
      const { units } = await source.rank(state.text, $("feature").value, $("pattern").value);
      for (const u of units) {
        const sign = u.r >= 0 ? "+" : "−";
        const button = element("button", { type: "button" },
          `layer ${u.layer} ${u.kind} unit ${u.unit}   r = ${sign}${Math.abs(u.r).toFixed(3)}`);
        button.addEventListener("click", () => pickUnit(u));
        const item = element("li");
        item.appendChild(button);
        list.appendChild(item);
      }
      list.dataset.state = "ready";
      const flat = units.every((u) => u.r === 0);
      setStatus("units-status", flat ? "This feature has the same value at every token of " +
        "the text (in the letters and d2l modes there is no punctuation and no line break), " +
        "so no unit can follow it." : "");
    } catch (error) {
      list.dataset.state = "error";
      setStatus("units-status", error.message, true);
    }
  }

  function pickUnit(u) {
    $("layer").value = String(u.layer);
    $("kind").value = u.kind;
    $("unit").value = String(u.unit);
    showUnit();
    $("unit-form").scrollIntoView({ behavior: "smooth", block: "start" });
  }

  // ------------------------------------------------------------ training

  // About five round steps (1, 2 or 5 times a power of ten) across [low, high].
  function ticks(low, high) {
    const raw = (high - low) / 5 || 1;
    const power = 10 ** Math.floor(Math.log10(raw));
    const step = [1, 2, 5, 10].map((m) => m * power).find((s) => s >= raw);
    const out = [];
    for (let t = Math.ceil(low / step) * step; t <= high + step * 1e-9; t += step) out.push(t);
    return out;
  }

  function drawCurve(history) {
    const svg = $("curve");
    svg.replaceChildren();
    const W = 640, H = 320, left = 60, right = 20, top = 20, bottom = 44;
    const series = [
      { key: "train_ppl", name: "training", css: "train" },
      { key: "val_ppl", name: "validation", css: "val" },
    ];
    const rows = history.filter((r) => Number.isFinite(r.epoch));
    const values = rows.flatMap((r) => series.map((s) => r[s.key])).filter(Number.isFinite);
    if (!values.length) {
      svgElement("text", { x: W / 2, y: H / 2, "text-anchor": "middle" }, svg).textContent =
        "No finished epoch yet.";
      return;
    }
    const epochs = rows.map((r) => r.epoch);
    const e0 = Math.min(...epochs), e1 = Math.max(...epochs);
    let y0 = Math.min(...values), y1 = Math.max(...values);
    const pad = (y1 - y0) * 0.08 || Math.max(1, y1 * 0.1);
    y0 = Math.max(0, y0 - pad);
    y1 += pad;
    const x = (e) =>
      e1 === e0 ? (left + W - right) / 2 : left + ((e - e0) / (e1 - e0)) * (W - left - right);
    const y = (v) => top + (1 - (v - y0) / (y1 - y0)) * (H - top - bottom);
    for (const v of ticks(y0, y1)) {
      svgElement("line", { class: "grid", x1: left, x2: W - right, y1: y(v), y2: y(v) }, svg);
      svgElement("text", { x: left - 6, y: y(v) + 4, "text-anchor": "end" }, svg).textContent =
        Number(v.toPrecision(6)).toString();
    }
    const every = Math.max(1, Math.ceil((e1 - e0 + 1) / 10));
    for (const e of epochs.filter((e) => (e - e0) % every === 0)) {
      svgElement("text", { x: x(e), y: H - bottom + 18, "text-anchor": "middle" }, svg)
        .textContent = String(e);
    }
    svgElement("line", { class: "axis", x1: left, x2: left, y1: top, y2: H - bottom }, svg);
    svgElement("line", { class: "axis", x1: left, x2: W - right, y1: H - bottom, y2: H - bottom }, svg);
    svgElement("text", { x: (left + W - right) / 2, y: H - 6, "text-anchor": "middle" }, svg)
      .textContent = "epoch";
    svgElement("text", { x: 14, y: (top + H - bottom) / 2, "text-anchor": "middle",
      transform: `rotate(-90 14 ${(top + H - bottom) / 2})` }, svg).textContent = "perplexity";
    series.forEach((s, n) => {
      const points = rows.filter((r) => Number.isFinite(r[s.key]));
      if (!points.length) return;
      svgElement("polyline", { class: s.css,
        points: points.map((r) => `${x(r.epoch)},${y(r[s.key])}`).join(" ") }, svg);
      for (const r of points) {
        const dot = svgElement("circle", { class: s.css, cx: x(r.epoch), cy: y(r[s.key]), r: 3.5 }, svg);
        svgElement("title", {}, dot).textContent = `epoch ${r.epoch}: ${s.name} ${r[s.key].toFixed(3)}`;
      }
      const ly = top + 6 + n * 18;
      svgElement("line", { class: s.css, x1: W - right - 120, x2: W - right - 100, y1: ly, y2: ly,
        "stroke-width": 2 }, svg);
      svgElement("text", { x: W - right - 94, y: ly + 4 }, svg).textContent = s.name;
    });
  }

  function showConfig(config) {
    const table = $("config");
    table.replaceChildren();
    const add = (name, value) => {
      const row = element("tr");
      row.appendChild(element("th", { scope: "row" }, name));
      row.appendChild(element("td", {}, typeof value === "string" ? value : JSON.stringify(value)));
      table.appendChild(row);
    };
    const walk = (object, prefix) => {
      for (const [name, value] of Object.entries(object)) {
        if (value && typeof value === "object" && !Array.isArray(value)) walk(value, `${prefix}${name}.`);
        else add(prefix + name, value);
      }
    };
    walk(config, "");
  }

  async function loadTraining() {
    try {
      const { config, history } = await source.training();
      drawCurve(history);
      showConfig(config);
    } catch (error) {
      setStatus("training-status", error.message, true);
    }
  }

  // ------------------------------------------------------------ start

  function setUp(info) {
    document.title = `rnnlab · ${info.run}`;
    $("run-name").textContent = info.run;
    $("summary").textContent = `${info.cell.toUpperCase()}, ${info.layers} layer` +
      `${info.layers === 1 ? "" : "s"} of ${info.hidden} units, ${info.vocab_size} tokens ` +
      `(mode ${info.mode}), ${info.checkpoint} checkpoint`;
    if (!source.live) document.body.classList.add("report");
    $("prefix").value = info.prefix;
    $("length").max = String(info.max_generate);
    $("text").maxLength = info.max_text_chars;
    $("text").value = info.text;
    for (let layer = 1; layer <= info.layers; layer++) {
      $("layer").appendChild(element("option", { value: String(layer) }, String(layer)));
    }
    $("kind").appendChild(element("option", { value: "h" }, "h (hidden state)"));
    if (info.cell === "lstm") $("kind").appendChild(element("option", { value: "c" }, "c (cell state)"));
    $("unit").max = String(info.hidden - 1);
    for (const name of Object.keys(info.features)) {
      $("feature").appendChild(element("option", { value: name }, name));
    }
    pickFeature();
  }

  async function start() {
    try {
      state.info = await source.info();
    } catch (error) {
      setStatus("read-status", error.message, true);
      return;
    }
    setUp(state.info);
    $("generate-form").addEventListener("submit", generate);
    $("stop-button").addEventListener("click", () => generation && generation.abort());
    $("read-button").addEventListener("click", read);
    const tokens = $("tokens");
    tokens.addEventListener("mouseover", (event) => {
      const i = tokenIndex(event);
      if (i >= 0) showTop5(i);
    });
    tokens.addEventListener("focusin", (event) => {
      const i = tokenIndex(event);
      if (i >= 0) showTop5(i);
    });
    tokens.addEventListener("keydown", moveFocus);
    $("unit-form").addEventListener("submit", showUnit);
    for (const id of ["layer", "kind"]) $(id).addEventListener("change", () => showUnit());
    $("feature").addEventListener("change", pickFeature);
    $("rank-form").addEventListener("submit", rank);
    await Promise.all([read(), loadTraining()]);
  }

  start();
})();
