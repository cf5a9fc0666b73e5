// promptwire console: try the model, watch the server. Plain JavaScript, no build step, no
// other origin: every URL below is relative to this server (the page is /console).
//
// The API key, when the server has one, is kept in this tab's sessionStorage (gone with the tab)
// and sent only as an "Authorization: Bearer" header: never in a URL, never kept past the tab.
"use strict";

(function () {
  const KEY_STORE = "promptwire-console-key";
  const POLL_MS = 1000; // the stats are fetched about once a second, while the page is visible
  const HISTORY_SECONDS = 300; // the charts show the last five minutes
  const WINDOW_SECONDS = 15; // percentiles over the last 15 s of observations

  const $ = (id) => document.getElementById(id);
  let memoryKey = null; // where sessionStorage is unavailable

  // -- the API key -------------------------------------------------------------------------

  function getKey() {
    try {
      return window.sessionStorage.getItem(KEY_STORE) || memoryKey;
    } catch (_) {
      return memoryKey;
    }
  }

  function setKey(key) {
    memoryKey = key || null;
    $("key-forget").hidden = !key;
    try {
      if (key) window.sessionStorage.setItem(KEY_STORE, key);
      else window.sessionStorage.removeItem(KEY_STORE);
    } catch (_) {
      /* memory only */
    }
  }

  $("key-forget").hidden = !getKey();
  $("key-forget").addEventListener("click", () => {
    setKey(null);
    window.location.reload();
  });

  class Unauthorized extends Error {}

  let keyWaiters = [];

  function askForKey(message) {
    const panel = $("key-panel");
    panel.hidden = false;
    if (!previous) $("metrics-note").textContent = "The charts start once the key is given.";
    $("key-message").textContent = message || "";
    if (document.activeElement === document.body) $("api-key").focus();
    return new Promise((resolve) => keyWaiters.push(resolve));
  }

  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = $("api-key");
    const key = input.value.trim();
    if (!key) return;
    setKey(key);
    input.value = "";
    $("key-message").textContent = "";
    $("key-panel").hidden = true;
    const waiters = keyWaiters;
    keyWaiters = [];
    waiters.forEach((resolve) => resolve());
  });

  // Every call to the server: same origin, no cookies, the key as a bearer header.
  async function api(path, options) {
    const headers = Object.assign({}, (options && options.headers) || {});
    const key = getKey();
    if (key) headers["Authorization"] = "Bearer " + key;
    const response = await fetch(path, Object.assign({}, options, {
      headers,
      credentials: "omit",
      cache: "no-store",
      redirect: "error",
      referrerPolicy: "no-referrer",
    }));
    if (response.status === 401) {
      const hadKey = Boolean(key);
      if (hadKey) setKey(null);
      throw new Unauthorized(hadKey ? "The server refused this key." : "");
    }
    return response;
  }

  // Call ``fn`` until it gets past the key: asks for the key on a 401 and tries again.
  async function withKey(fn) {
    for (;;) {
      try {
        return await fn();
      } catch (error) {
        if (!(error instanceof Unauthorized)) throw error;
        await askForKey(error.message);
      }
    }
  }

  async function errorMessage(response) {
    try {
      const body = await response.json();
      if (body && body.error) return body.error.message || body.error.type || response.statusText;
    } catch (_) {
      /* not JSON */
    }
    return response.status + " " + response.statusText;
  }

  // -- the server: /health (public) and /v1/models -----------------------------------------

  let capabilities = { tools: false, structured_output: false };

  async function loadHealth() {
    for (;;) {
      try {
        const response = await fetch("health", { credentials: "omit", cache: "no-store" });
        if (response.ok) {
          const health = await response.json();
          capabilities = health.capabilities || capabilities;
          $("schema-field").hidden = !capabilities.structured_output;
          $("tools-field").hidden = !capabilities.tools;
          $("server-line").textContent =
            "Ready: " + (health.model || "a model") + " · protocol " + (health.protocol || "");
          return;
        }
        $("server-line").textContent = "Not ready yet: " + (await errorMessage(response));
      } catch (_) {
        $("server-line").textContent = "The server does not answer; trying again…";
      }
      await sleep(2000);
    }
  }

  async function loadModels() {
    const response = await withKey(() => api("v1/models"));
    if (!response.ok) return;
    const listed = await response.json();
    const select = $("model");
    select.textContent = "";
    for (const model of listed.data || []) {
      const option = document.createElement("option");
      option.value = option.textContent = model.id;
      select.append(option);
    }
  }

  // -- Try it: a streamed chat completion ----------------------------------------------------

  let running = null; // the AbortController of the request in flight

  function parseJsonField(id, what) {
    const text = $(id).value.trim();
    if (!text) return undefined;
    try {
      return JSON.parse(text);
    } catch (error) {
      throw new Error(what + " is not valid JSON: " + error.message);
    }
  }

  function request() {
    const messages = [];
    const system = $("system").value.trim();
    if (system) messages.push({ role: "system", content: system });
    messages.push({ role: "user", content: $("prompt").value });
    const body = { messages, stream: true, stream_options: { include_usage: true } };
    const model = $("model").value;
    if (model) body.model = model;
    const temperature = $("temperature").value;
    if (temperature !== "") body.temperature = Number(temperature);
    const maxTokens = $("max-tokens").value;
    if (maxTokens !== "") body.max_tokens = Number(maxTokens);
    if (capabilities.structured_output) {
      const schema = parseJsonField("schema", "The JSON schema");
      if (schema !== undefined) {
        body.response_format = { type: "json_schema", json_schema: { name: "console", schema } };
      }
    }
    if (capabilities.tools) {
      const tools = parseJsonField("tools", "Tools");
      if (tools !== undefined) body.tools = tools;
    }
    return body;
  }

  // Server-sent events from a fetch body: yields each event's data.
  async function* events(body) {
    const reader = body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    let carriedCR = false;
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      let text = (carriedCR ? "\r" : "") + decoder.decode(value, { stream: true });
      carriedCR = text.endsWith("\r");
      if (carriedCR) text = text.slice(0, -1);
      buffer += text.replace(/\r\n?/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const data = block
          .split("\n")
          .filter((line) => line.startsWith("data:"))
          .map((line) => line.slice(5).replace(/^ /, ""))
          .join("\n");
        if (data) yield data;
      }
    }
  }

  function showStats(parts, isError) {
    const stats = $("reply-stats");
    stats.textContent = parts.filter(Boolean).join(" · ");
    stats.classList.toggle("error", Boolean(isError));
  }

  function seconds(ms) {
    return (ms / 1000).toFixed(ms < 10000 ? 2 : 1) + " s";
  }

  async function send(event) {
    event.preventDefault();
    if (running) return;
    const replyText = $("reply-text");
    const toolCalls = $("tool-calls");
    let body;
    try {
      body = request();
    } catch (error) {
      showStats([error.message], true);
      return;
    }
    replyText.textContent = "";
    toolCalls.textContent = "";
    toolCalls.hidden = true;
    showStats(["Waiting for the first token…"]);
    const controller = new AbortController();
    running = controller;
    $("send").disabled = true;
    $("stop").disabled = false;
    const started = performance.now();
    let first = null;
    let usage = null;
    let finish = null;
    let pieces = 0;
    const calls = [];
    try {
      const response = await withKey(() =>
        api("v1/chat/completions", {
          method: "POST",
          headers: { "Content-Type": "application/json", Accept: "text/event-stream" },
          body: JSON.stringify(body),
          signal: controller.signal,
        })
      );
      if (!response.ok) {
        showStats(["Error: " + (await errorMessage(response))], true);
        return;
      }
      for await (const data of events(response.body)) {
        if (data === "[DONE]") break;
        const chunk = JSON.parse(data);
        if (chunk.error) {
          showStats(["Error: " + (chunk.error.message || chunk.error.type)], true);
          return;
        }
        if (chunk.usage) usage = chunk.usage;
        for (const choice of chunk.choices || []) {
          const delta = choice.delta || {};
          if (delta.content || delta.tool_calls) {
            if (first === null) first = performance.now();
            pieces += 1;
          }
          if (delta.content) replyText.textContent += delta.content;
          for (const call of delta.tool_calls || []) {
            const index = call.index || 0;
            const known = calls[index] || (calls[index] = { name: "", arguments: "" });
            if (call.id) known.id = call.id;
            if (call.function && call.function.name) known.name += call.function.name;
            if (call.function && call.function.arguments) known.arguments += call.function.arguments;
          }
          if (calls.length) {
            toolCalls.hidden = false;
            toolCalls.textContent = JSON.stringify(calls.map(shownCall), null, 2);
          }
          if (choice.finish_reason) finish = choice.finish_reason;
        }
      }
      const ended = performance.now();
      const tokens = usage ? usage.completion_tokens : null;
      showStats([
        first !== null ? "time to first token " + seconds(first - started) : "no token",
        tokenRate(tokens, started, first, ended),
        usage
          ? usage.prompt_tokens + " prompt + " + usage.completion_tokens + " completion tokens"
          : pieces + " pieces",
        finish ? "finish: " + finish : null,
        "total " + seconds(ended - started),
      ]);
    } catch (error) {
      if (error.name === "AbortError") {
        showStats([
          "Stopped after " + seconds(performance.now() - started),
          pieces + " pieces received; the server stopped generating",
        ]);
      } else {
        showStats(["Error: " + error.message], true);
      }
    } finally {
      running = null;
      $("send").disabled = false;
      $("stop").disabled = true;
    }
  }

  // Tokens per second after the first, as the server's stream_tokens_per_second counts them;
  // over less than MIN_DECODE_MS the pieces may have come in one read (a short reply), so then
  // the whole request's rate.
  const MIN_DECODE_MS = 200;

  function tokenRate(tokens, started, first, ended) {
    if (tokens === null || tokens < 1) return null;
    if (first !== null && tokens > 1 && ended - first >= MIN_DECODE_MS) {
      return (((tokens - 1) * 1000) / (ended - first)).toFixed(1) + " tokens/s";
    }
    return ((tokens * 1000) / Math.max(ended - started, 1)).toFixed(1) + " tokens/s (whole request)";
  }

  function shownCall(call) {
    let args = call.arguments;
    try {
      args = JSON.parse(call.arguments);
    } catch (_) {
      /* shown as received */
    }
    return { name: call.name, arguments: args };
  }

  $("try-form").addEventListener("submit", send);
  $("stop").addEventListener("click", () => {
    if (running) running.abort();
  });
  $("prompt").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) $("try-form").requestSubmit();
  });

  // -- Watch it: charts from GET /console/stats ----------------------------------------------

  const PALETTE = ["#2457c5", "#d9731a", "#2e9e5b", "#b3261e", "#7b4bc4", "#0f8ea3", "#8a6d0b"];

  // Each chart: its title, how its series are named from a snapshot, and the unit shown.
  const CHARTS = [
    { id: "tokens", title: "Tokens generated per second", unit: "tok/s", fixed: ["tokens/s"] },
    { id: "load", title: "Requests in flight and waiting", unit: "", fixed: ["in flight", "waiting"] },
    { id: "ttft", title: "Time to first token", unit: "s", fixed: ["p50", "p95"] },
    { id: "latency", title: "Request latency", unit: "s", fixed: ["p50", "p95"] },
    { id: "errors", title: "Errors per second, by kind", unit: "/s", fixed: null },
    { id: "engine", title: "Engine", unit: "", fixed: null },
    { id: "engine-rates", title: "Engine counters per second", unit: "/s", fixed: null },
  ];

  const charts = {}; // id -> { figure, plot, output, names, spec }
  const times = []; // x values: seconds since the epoch, this browser's clock
  const columns = {}; // id -> { series name -> values (aligned with times) }
  const snapshots = []; // the stats answers kept for the windows (the last WINDOW_SECONDS)
  let previous = null;

  function chartFigure(spec) {
    const figure = document.createElement("figure");
    figure.className = "chart";
    figure.id = "chart-" + spec.id;
    const caption = document.createElement("figcaption");
    const title = document.createElement("span");
    title.textContent = spec.title;
    const output = document.createElement("output");
    output.id = "now-" + spec.id;
    output.textContent = "—";
    caption.append(title, output);
    const plot = document.createElement("div");
    plot.className = "plot";
    figure.append(caption, plot);
    $("charts").append(figure);
    return { figure, plotBox: plot, output, plot: null, names: [], spec };
  }

  function chartWidth(chart) {
    return Math.max(240, chart.plotBox.clientWidth || chart.figure.clientWidth - 10 || 300);
  }

  function build(chart, names) {
    if (chart.plot) chart.plot.destroy();
    chart.names = names;
    const spec = chart.spec;
    const series = [{}].concat(
      names.map((name, index) => ({
        label: name,
        stroke: PALETTE[index % PALETTE.length],
        width: 1.5,
        spanGaps: false,
        value: (_, v) => (v == null ? "—" : format(v, spec.unit)),
      }))
    );
    chart.plot = new window.uPlot(
      {
        width: chartWidth(chart),
        height: 150,
        series,
        axes: [
          { space: 70, values: (_, ticks) => ticks.map(clock) },
          { size: 64, values: (_, ticks) => ticks.map((v) => format(v, spec.unit === "s" ? "s" : "")) },
        ],
        scales: { x: { time: true }, y: { range: (_, min, max) => [0, max > 0 ? max * 1.1 : 1] } },
        legend: { live: false },
        cursor: { show: false },
      },
      chartData(chart),
      chart.plotBox
    );
  }

  function chartData(chart) {
    const values = columns[chart.spec.id] || {};
    return [times.slice()].concat(chart.names.map((name) => values[name] || times.map(() => null)));
  }

  function clock(seconds) {
    const time = new Date(seconds * 1000);
    return [time.getHours(), time.getMinutes(), time.getSeconds()]
      .map((part) => String(part).padStart(2, "0"))
      .join(":");
  }

  function format(value, unit) {
    if (value == null || Number.isNaN(value)) return "—";
    if (value === 0) return unit && unit !== "s" ? "0 " + unit : "0";
    const abs = Math.abs(value);
    let text;
    if (unit === "s") {
      text = abs < 1 ? (value * 1000).toFixed(abs < 0.01 ? 1 : 0) + " ms" : value.toFixed(2) + " s";
      return text;
    }
    if (abs >= 1e9) text = (value / 1e9).toFixed(1) + "G";
    else if (abs >= 1e6) text = (value / 1e6).toFixed(1) + "M";
    else if (abs >= 1e4) text = (value / 1e3).toFixed(1) + "k";
    else if (abs >= 100 || Number.isInteger(value)) text = Math.round(value).toString();
    else text = value.toFixed(abs >= 10 ? 1 : 2);
    return unit ? text + " " + unit : text;
  }

  // The q-quantile of observations spread over buckets (as Prometheus' histogram_quantile).
  function quantile(q, counts, bounds) {
    const total = counts.reduce((a, b) => a + b, 0);
    if (total <= 0) return null;
    const rank = q * total;
    let seen = 0;
    for (let i = 0; i < counts.length; i++) {
      if (counts[i] > 0 && seen + counts[i] >= rank) {
        if (i >= bounds.length) return bounds[bounds.length - 1];
        const lower = i === 0 ? 0 : bounds[i - 1];
        return lower + ((bounds[i] - lower) * (rank - seen)) / counts[i];
      }
      seen += counts[i];
    }
    return bounds[bounds.length - 1];
  }

  function windowed(now, key) {
    const oldest = snapshots[0];
    if (!oldest || !now[key] || !oldest[key] || oldest === now) return null;
    const counts = now[key].map((count, i) => count - (oldest[key][i] || 0));
    return [quantile(0.5, counts, now.latency_bounds), quantile(0.95, counts, now.latency_bounds)];
  }

  function push(id, name, value) {
    const table = columns[id] || (columns[id] = {});
    if (!table[name]) table[name] = times.map(() => null).slice(0, times.length - 1);
    table[name].push(value);
  }

  function rate(now, before, read) {
    if (!before) return null;
    const dt = now.time - before.time;
    if (dt <= 0) return null;
    return Math.max(0, (read(now) - read(before)) / dt);
  }

  function engineFigure(snapshot, name) {
    for (const figure of snapshot.engine || []) if (figure.name === name) return figure.value;
    return 0;
  }

  function record(now) {
    times.push(Date.now() / 1000);
    snapshots.push(now);
    while (snapshots.length > 1 && now.time - snapshots[0].time > WINDOW_SECONDS) snapshots.shift();
    const before = previous;
    previous = now;
    const readouts = {};
    if (now.metrics) {
      const tokens = rate(now, before, (s) => s.completion_tokens);
      push("tokens", "tokens/s", tokens);
      readouts.tokens = format(tokens, "tok/s");
      push("load", "in flight", now.in_flight);
      push("load", "waiting", now.waiting);
      readouts.load = now.in_flight + " in flight · " + now.waiting + " waiting";
      const ttft = windowed(now, "first_token") || [null, null];
      push("ttft", "p50", ttft[0]);
      push("ttft", "p95", ttft[1]);
      readouts.ttft = "p50 " + format(ttft[0], "s") + " · p95 " + format(ttft[1], "s");
      const latency = windowed(now, "duration") || [null, null];
      push("latency", "p50", latency[0]);
      push("latency", "p95", latency[1]);
      readouts.latency = "p50 " + format(latency[0], "s") + " · p95 " + format(latency[1], "s");
      const kinds = new Set(Object.keys(now.errors || {}));
      if (before) Object.keys(before.errors || {}).forEach((kind) => kinds.add(kind));
      let errorTotal = 0;
      for (const kind of kinds) {
        const value = rate(now, before, (s) => (s.errors || {})[kind] || 0);
        errorTotal += value || 0;
        push("errors", kind, value);
      }
      readouts.errors = kinds.size ? format(errorTotal, "/s") + " · " + now.requests + " requests" : "none";
    }
    const gauges = [];
    const counters = [];
    for (const figure of now.engine || []) {
      if (figure.kind === "counter") {
        const value = rate(now, before, (s) => engineFigure(s, figure.name));
        push("engine-rates", figure.name, value);
        counters.push(figure.name + " " + format(value, "/s"));
      } else if (!/_bytes$/.test(figure.name)) {
        push("engine", figure.name, figure.value);
        gauges.push(figure.name + " " + format(figure.value, ""));
      }
    }
    readouts.engine = gauges.join(" · ") || "none reported";
    readouts["engine-rates"] = counters.join(" · ") || "none reported";
    // The last five minutes only.
    while (times.length && times[times.length - 1] - times[0] > HISTORY_SECONDS) {
      times.shift();
      for (const table of Object.values(columns)) for (const values of Object.values(table)) values.shift();
    }
    for (const table of Object.values(columns)) {
      for (const values of Object.values(table)) while (values.length < times.length) values.push(null);
    }
    draw(readouts, now);
  }

  function draw(readouts, now) {
    for (const spec of CHARTS) {
      const chart = charts[spec.id] || (charts[spec.id] = chartFigure(spec));
      const names = spec.fixed || Object.keys(columns[spec.id] || {});
      const hide = (spec.id.startsWith("engine") || spec.id === "errors") && !names.length;
      chart.figure.hidden = hide && spec.id !== "errors";
      if (readouts[spec.id] !== undefined) chart.output.textContent = readouts[spec.id];
      chart.figure.dataset.samples = String(times.length);
      if (!window.uPlot) continue;
      if (!chart.plot || chart.names.join("\n") !== names.join("\n")) build(chart, names);
      else chart.plot.setData(chartData(chart));
    }
    $("metrics-note").textContent = now.metrics
      ? "The server's own counters, once a second; the last five minutes."
      : "This server counts nothing (PROMPTWIRE_METRICS=false): only the engine's own figures.";
  }

  let polling = false;

  async function poll() {
    if (polling) return;
    polling = true;
    try {
      while (!document.hidden) {
        const started = performance.now();
        try {
          const response = await withKey(() => api("console/stats"));
          if (response.ok) record(await response.json());
        } catch (_) {
          /* the server is away: try again */
        }
        await sleep(Math.max(100, POLL_MS - (performance.now() - started)));
      }
    } finally {
      polling = false;
    }
  }

  document.addEventListener("visibilitychange", () => {
    if (!document.hidden) poll();
  });
  window.addEventListener("resize", () => {
    for (const chart of Object.values(charts)) {
      if (chart.plot) chart.plot.setSize({ width: chartWidth(chart), height: 150 });
    }
  });

  function sleep(ms) {
    return new Promise((resolve) => setTimeout(resolve, ms));
  }

  loadHealth();
  loadModels().catch(() => {});
  poll();
})();
