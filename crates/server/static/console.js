// The admin console: polls the admin API (the console cookie authenticates each call) and
// renders what it answers. Every value is inserted as text, never as HTML.
"use strict";

const POLL_MS = 5000;
const REASONS = ["rate_limited", "throttled", "too_many_failures", "locked_out", "banned"];

function utc(ms) {
  return ms == null ? "" : new Date(ms).toISOString().replace("T", " ").replace(/\.\d+Z$/, "");
}

function cell(text) {
  const td = document.createElement("td");
  td.textContent = text == null ? "" : String(text);
  return td;
}

function row(cells) {
  const tr = document.createElement("tr");
  for (const c of cells) tr.append(c instanceof Node ? c : cell(c));
  return tr;
}

async function api(method, path, body) {
  const response = await fetch(path, {
    method,
    credentials: "same-origin",
    headers: body === undefined ? {} : { "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (response.status === 401) {
    window.location.reload(); // the console cookie expired: back to the token form
    throw new Error("the console session ended");
  }
  const text = await response.text();
  const answer = text ? JSON.parse(text) : {};
  if (!response.ok) throw new Error(answer.detail || answer.title || response.statusText);
  return answer;
}

function showError(error) {
  const box = document.getElementById("console-error");
  box.hidden = !error;
  box.className = error ? "notice error" : "notice";
  box.textContent = error ? String(error.message || error) : "";
}

function renderStatus(status) {
  const signal = document.getElementById("attack-signal");
  const seen = status.attack_signal;
  if (!seen) {
    signal.textContent = "The policy has no under-attack signal.";
    signal.className = "signal";
  } else {
    const trip = seen.tripped_by;
    const by = trip ? ": " + trip.detector + " counted " + trip.observed + " against " +
      trip.expected + ", until " + utc(trip.until) + " UTC" : "";
    const readings = seen.detectors.map((d) => d.detector + " z=" + d.z).join(", ");
    signal.textContent = (seen.under_attack ? "Yes: under attack" + by : "No") +
      " (as of " + utc(seen.as_of) + " UTC; " + (seen.warm ? "" : "baseline warming up; ") +
      readings + ")";
    signal.className = seen.under_attack ? "signal alarm" : "signal calm";
  }
  document.getElementById("store-health").textContent = status.store;
  document.getElementById("passkey-accounts").textContent = status.accounts_with_passkeys;
  const rows = status.decisions.slice().reverse().map((m) =>
    row([utc(m.start).slice(0, 16), m.allowed, m.challenged, ...REASONS.map((r) => m.denied[r] || 0)]));
  document.getElementById("decision-rows").replaceChildren(...rows);
}

function unlockButton(key) {
  const button = document.createElement("button");
  button.type = "button";
  button.textContent = "Unlock";
  button.addEventListener("click", () => act(() => api("POST", "/admin/v1/unlock", { key })));
  const td = document.createElement("td");
  td.append(button);
  return td;
}

function renderRestrictions(listing) {
  const rows = listing.restrictions.map((r) =>
    row([r.key, r.until == null ? "permanent" : utc(r.until) + " UTC", unlockButton(r.key)]));
  if (rows.length === 0) rows.push(row(["none", "", ""]));
  document.getElementById("restriction-rows").replaceChildren(...rows);
}

function renderAllowlist(listing) {
  const items = listing.networks.map((network) => {
    const li = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = "Remove";
    button.addEventListener("click", () => act(() => api("DELETE", "/admin/v1/allowlist", { network })));
    li.append(network + " ", button);
    return li;
  });
  document.getElementById("allowlist-rows").replaceChildren(...items);
}

function renderEvents(listing) {
  const rows = listing.events.map((e) =>
    row([utc(e.at), e.kind, e.key, e.subject, e.until == null ? "" : utc(e.until)]));
  document.getElementById("event-rows").replaceChildren(...rows);
}

function renderOutbox(outbox) {
  document.getElementById("outbox-depth").textContent = outbox.queued + " queued, " +
    outbox.sent + " sent (last 7 days), " + outbox.failed + " failed.";
  const rows = outbox.unsent.map((m) =>
    row([utc(m.next_attempt_at), m.kind, m.recipient, m.state, m.attempts, m.last_error]));
  if (rows.length === 0) rows.push(row(["nothing waiting", "", "", "", "", ""]));
  document.getElementById("outbox-rows").replaceChildren(...rows);
}

async function refresh() {
  try {
    const [status, restrictions, allowlist, outbox, events] = await Promise.all([
      api("GET", "/admin/v1/status"),
      api("GET", "/admin/v1/lockouts?limit=100"),
      api("GET", "/admin/v1/allowlist"),
      api("GET", "/admin/v1/outbox?limit=20"),
      api("GET", "/admin/v1/events?limit=20"),
    ]);
    renderStatus(status);
    renderRestrictions(restrictions);
    renderAllowlist(allowlist);
    renderOutbox(outbox);
    renderEvents(events);
    document.getElementById("updated").textContent = "Updated " + utc(Date.now()) + " UTC.";
    showError(null);
  } catch (error) {
    showError(error);
  }
}

// Runs a change, then shows the console as it is after it.
async function act(change) {
  try {
    await change();
    showError(null);
  } catch (error) {
    showError(error);
  }
  await refresh();
}

document.getElementById("unlock-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const input = document.getElementById("unlock-username");
  act(async () => {
    await api("POST", "/admin/v1/unlock", { username: input.value });
    input.value = "";
  });
});

document.getElementById("allow-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const input = document.getElementById("allow-network");
  act(async () => {
    await api("PUT", "/admin/v1/allowlist", { network: input.value });
    input.value = "";
  });
});

document.getElementById("mail-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const input = document.getElementById("mail-username");
  const result = document.getElementById("mail-result");
  const which = event.submitter ? event.submitter.value : "reset";
  act(async () => {
    result.textContent = "";
    const username = input.value;
    const answer = await api("POST", "/admin/v1/mail/" + which, { username });
    result.textContent = which === "reset"
      ? (answer.queued ? "A reset link for " + username + " is queued."
        : username + " had three reset links this hour: none queued.")
      : "A verification link for " + username + " is queued to " + answer.email + ".";
    input.value = "";
  });
});

refresh();
setInterval(refresh, POLL_MS);
