// The eventcenter dashboard: polls /dashboard/state and redraws. Plain DOM, no library.
//
// The API key comes from the URL fragment (/dashboard#key=SECRET), is kept in this tab's
// sessionStorage, removed from the address bar, and sent as "Authorization: Bearer".
// Every value from the server is written with textContent, never parsed as HTML.
"use strict";

(function () {
  const STATE_URL = "/dashboard/state";
  const KEY_ITEM = "eventcenter.dashboard.key";
  const DEFAULT_INTERVAL_S = 1.0;
  const OFFLINE_INTERVAL_S = 3.0;

  function takeKeyFromFragment() {
    const fragment = new URLSearchParams(window.location.hash.slice(1));
    const key = fragment.get("key");
    if (key) {
      window.sessionStorage.setItem(KEY_ITEM, key);
      fragment.delete("key");
      const rest = fragment.toString();
      const url = window.location.pathname + window.location.search + (rest ? "#" + rest : "");
      window.history.replaceState(null, "", url);
    }
  }

  function apiKey() {
    return window.sessionStorage.getItem(KEY_ITEM);
  }

  function byId(testid) {
    return document.querySelector('[data-testid="' + testid + '"]');
  }

  function el(tag, attributes, children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes || {})) {
      if (value !== null && value !== undefined) node.setAttribute(name, String(value));
    }
    for (const child of children || []) {
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function cell(testid, text, attributes) {
    return el("td", Object.assign({ "data-testid": testid }, attributes || {}), [text]);
  }

  // A time cell: the time of day, the whole UTC date and time when hovered.
  function timeCell(testid, seconds) {
    return cell(testid, short(seconds), { title: utc(seconds) });
  }

  function utc(seconds) {
    if (seconds === null || seconds === undefined) return "never";
    return new Date(seconds * 1000).toISOString().replace("T", " ").slice(0, 23);
  }

  function short(seconds) {
    if (seconds === null || seconds === undefined) return "never";
    return utc(seconds).slice(11);
  }

  function show(testid, visible) {
    byId(testid).hidden = !visible;
  }

  // --- the sections ---------------------------------------------------------------------------

  function drawProcessor(processor) {
    byId("processor-state").textContent = processor.state;
    byId("processor-states").replaceChildren(
      ...processor.states.map((name) =>
        el(
          "span",
          {
            class: "pill",
            "data-testid": "processor-state-" + name,
            "data-current": String(name === processor.state),
          },
          [name]
        )
      )
    );
    const details = [];
    if (processor.holder) details.push("entered for correlation id " + processor.holder);
    if (processor.tuning_busy) details.push("a tuning run is in progress");
    const last = processor.last_transition;
    if (last) details.push("last transition " + last.change + " at " + utc(last.at) + ": " + last.reason);
    byId("processor-detail").textContent = details.join("; ");
  }

  function drawSources(sources) {
    byId("sources").replaceChildren(
      ...sources.map((source) => {
        const health = source.health;
        return el("tr", { "data-testid": "source", "data-source": source.key }, [
          cell("source-key", source.key),
          cell("source-mode", source.mode, { "data-mode": source.mode }),
          cell("source-health", health.score.toFixed(2) + " " + health.verdict, {
            "data-verdict": health.verdict,
          }),
          cell("source-failures", health.consecutive_failures),
          cell("source-items", health.items_pushed + " / " + health.items_polled),
          timeCell("source-last-success", health.last_success),
        ]);
      })
    );
    show("sources-empty", sources.length === 0);
  }

  function drawSwitches(switches) {
    byId("switches").replaceChildren(
      ...switches.map((change) =>
        el("li", { "data-testid": "switch", "data-source": change.key, "data-to": change.to }, [
          el("time", { "data-testid": "switch-at", title: utc(change.at) }, [short(change.at)]),
          " ",
          el("span", { "data-testid": "switch-source", class: "muted" }, [change.key]),
          " ",
          el("strong", { "data-testid": "switch-change" }, [change.previous + " → " + change.to]),
          " ",
          el("span", { "data-testid": "switch-reason" }, [change.reason]),
        ])
      )
    );
    show("switches-empty", switches.length === 0);
  }

  function drawQueues(queues) {
    if (queues === null) {
      byId("queues").replaceChildren();
      byId("queues-detail").textContent = "center-wide figures: shown to an operator's key";
      return;
    }
    byId("queues").replaceChildren(
      ...queues.subscriptions.map((sub) =>
        el("tr", { "data-testid": "queue", "data-subscription": sub.name }, [
          cell("queue-name", sub.name),
          cell("queue-queued", sub.queued),
          cell("queue-in-memory", sub.in_memory),
          cell("queue-in-store", sub.in_store),
          cell("queue-in-flight", sub.in_flight),
          cell("queue-paused", sub.paused ? "paused" : ""),
        ])
      )
    );
    byId("queues-detail").textContent =
      queues.in_flight + " running, " + queues.retrying + " waiting for a retry; oldest ready" +
      " delivery waited " + queues.oldest_wait_ms + " ms";
  }

  function drawDecisions(decisions) {
    byId("decisions").replaceChildren(
      ...decisions.map((row) =>
        el("tr", { "data-testid": "decision", "data-kind": row.kind }, [
          timeCell("decision-at", row.at),
          cell("decision-kind", row.kind),
          cell("decision-summary", row.summary),
          cell("decision-reason", row.reason),
          cell("decision-tenant", row.tenant),
        ])
      )
    );
  }

  function drawCases(cases) {
    byId("rca-cases").replaceChildren(
      ...cases.map((row) =>
        el("tr", { "data-testid": "rca-case", "data-case": row.id }, [
          timeCell("rca-opened", row.opened_at),
          cell("rca-source", row.tenant + "/" + (row.source || "-")),
          cell("rca-category", row.category + " (" + row.confidence.toFixed(2) + ")"),
          cell("rca-status", row.status),
          cell("rca-failures", row.failures),
          cell("rca-tries", row.attempts + " healing, " + row.notifications + " notices"),
        ])
      )
    );
    show("rca-empty", cases.length === 0);
  }

  function drawProblems(problems) {
    byId("problems").replaceChildren(
      ...problems.map((problem) =>
        el("li", { "data-testid": "problem", "data-part": problem.part }, [problem.reason])
      )
    );
    show("problems", problems.length > 0);
  }

  function draw(state) {
    byId("center-name").textContent = state.center.name + " (" + state.center.status + ")";
    byId("viewer").textContent = state.tenant === null ? "all tenants" : "tenant " + state.tenant;
    drawProcessor(state.processor);
    drawSources(state.sources);
    drawSwitches(state.switches);
    drawQueues(state.queues);
    drawDecisions(state.decisions);
    drawCases(state.rca_cases);
    drawProblems(state.problems);
    byId("updated-at").textContent = utc(state.at);
  }

  function connection(status, text) {
    const node = byId("connection");
    node.dataset.status = status;
    node.textContent = text;
  }

  // --- polling ------------------------------------------------------------------------------

  async function refusal(response) {
    try {
      const body = await response.json();
      return body.reason || body.detail || response.statusText;
    } catch (error) {
      return response.statusText;
    }
  }

  async function poll() {
    const headers = { Accept: "application/json" };
    const key = apiKey();
    if (key) headers.Authorization = "Bearer " + key;
    let interval = DEFAULT_INTERVAL_S;
    let response;
    try {
      response = await fetch(STATE_URL, { headers, cache: "no-store" });
    } catch (error) {
      connection("offline", "offline: retrying");
      window.setTimeout(poll, OFFLINE_INTERVAL_S * 1000);
      return;
    }
    try {
      if (response.status === 401 || response.status === 403) {
        const why = await refusal(response);
        const notice = byId("auth-needed");
        notice.textContent =
          (key ? "this API key was refused: " : "an API key is needed: ") + why +
          ". Open /dashboard#key=YOUR_KEY";
        notice.hidden = false;
        connection("refused", "refused (" + response.status + ")");
      } else if (!response.ok) {
        connection("error", "error " + response.status + ": " + (await refusal(response)));
        interval = OFFLINE_INTERVAL_S;
      } else {
        const state = await response.json();
        byId("auth-needed").hidden = true;
        draw(state);
        connection("live", "live");
        interval = state.poll_interval || DEFAULT_INTERVAL_S;
      }
    } catch (error) {
      // A body that is not the state this page knows: say so, keep polling.
      console.error(error);
      connection("error", "cannot show the state: " + error.message);
      interval = OFFLINE_INTERVAL_S;
    }
    window.setTimeout(poll, interval * 1000);
  }

  window.addEventListener("hashchange", takeKeyFromFragment);
  takeKeyFromFragment();
  poll();
})();
