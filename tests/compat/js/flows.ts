// The session flows of @inferencesh/sdk's README, the SDK unmodified, against the kube-sessions
// gateway: a Kubernetes token as apiKey, the gateway as baseUrl. Run by tests/compat/test_js_sdk.py:
//
//   KS_GATEWAYS=http://a,http://b KS_TOKEN=... KS_FOLLOW=stream,poll [KS_ORIGIN=https://app.example] \
//     node_modules/.bin/tsx flows.ts FLOW...
//
// Each flow runs once per follow mode in KS_FOLLOW (stream: NDJSON from /tasks/{id}/stream, the
// SDK's default; poll: `stream: false`, /tasks/{id}/status then GET /tasks/{id}). A task started
// through the first gateway is followed through the second. KS_ORIGIN makes fetch behave as a
// browser's on a page of that origin (CORS preflights and checks; browserfetch.ts). Prints
// "ok <flow> <mode>" per flow; the first failure exits 1 with what went wrong.
//
// In 0.6.54 `client.tasks.run` takes (params, processedInput, options) although the README shows
// (params, options): `client.run(params, options)` is the call that behaves as documented.
import assert from "node:assert/strict";
import {
  inference,
  InferenceError,
  parseStatus,
  TaskStatusCancelled,
  TaskStatusCompleted,
  TaskStatusFailed,
  type Inference,
  type Task,
} from "@inferencesh/sdk";
import { installBrowserFetch, seen } from "./browserfetch";

const [urlA, urlB = urlA] = (process.env.KS_GATEWAYS ?? "").split(",");
const apiKey = process.env.KS_TOKEN ?? "";
const origin = process.env.KS_ORIGIN;
if (origin) installBrowserFetch(origin);

type Mode = "stream" | "poll";
type Clients = { a: Inference; b: Inference; mode: Mode; stream: boolean };

function clients(mode: Mode): Clients {
  const stream = mode === "stream";
  // The client-wide setting of the README's "Streaming vs Polling"; pollIntervalMs only shortens the test.
  const make = (baseUrl: string) => inference({ apiKey, baseUrl, stream, pollIntervalMs: 200 });
  return { a: make(urlA), b: make(urlB), mode, stream };
}

async function rejects(promise: Promise<unknown>, status: number[], text: RegExp): Promise<InferenceError> {
  try {
    await promise;
  } catch (error) {
    assert.ok(error instanceof InferenceError, `expected an InferenceError, got ${error}`);
    assert.ok(status.includes(error.statusCode), `HTTP ${error.statusCode}, wanted ${status}: ${error.message}`);
    assert.match(error.message, text);
    return error;
  }
  assert.fail(`expected HTTP ${status} matching ${text}`);
}

function code(error: InferenceError): string {
  return JSON.parse(error.responseBody ?? "{}").code;
}

const flows: Record<string, (c: Clients) => Promise<void>> = {
  // Start a session, continue it, manage it (get, list, keepalive, end), then call it once ended.
  async sessions({ a, b, stream }) {
    const statuses: number[] = [];
    const first = await a.run(
      { app: "counter", input: { add: 1 }, session: "new", session_timeout: 300 },
      { onUpdate: (update) => statuses.push(parseStatus(update.status)) },
    );
    assert.equal(parseStatus(first.status), TaskStatusCompleted);
    assert.deepEqual(first.output, { total: 1, calls: 1 });
    assert.equal(statuses.at(-1), TaskStatusCompleted, `updates: ${statuses}`);
    const sessionId = first.session_id!;
    assert.match(sessionId, /^s-/);
    const second = await b.run({ app: "counter", input: { add: 2 }, session: sessionId }, { stream });
    assert.equal(second.session_id, sessionId);
    assert.deepEqual(second.output, { total: 3, calls: 2 });

    const info = (await b.sessions.get(sessionId)).data;
    assert.equal(info.id, sessionId);
    assert.equal(info.status, "active");
    assert.equal(info.idle_timeout, 300);
    assert.ok(info.expires_at, JSON.stringify(info));
    assert.equal(info.call_count, 2); // the worker's own count (keepalive's and list's may lag)
    const listed = (await a.sessions.list()).data.map((s) => s.id);
    assert.ok(listed.includes(sessionId), `${sessionId} not in ${listed}`);
    const kept = (await a.sessions.keepalive(sessionId)).data;
    assert.equal(kept.status, "active");
    assert.ok(kept.expires_at >= info.expires_at, `${kept.expires_at} < ${info.expires_at}`);

    await a.sessions.end(sessionId);
    const ended = (await b.sessions.get(sessionId)).data.status;
    assert.ok(ended === "ended" || ended === "active", ended); // closing, then Closed
    const error = await rejects(
      b.run({ app: "counter", input: { add: 1 }, session: sessionId }),
      [404, 410],
      /session not found/i,
    );
    assert.ok(["SESSION_ENDED", "SESSION_NOT_FOUND"].includes(code(error)), code(error));
  },

  // The errors the SDK raises: an unknown session, keepalive of an unknown one, an unknown task.
  async errors({ a, b }) {
    const missing = "s-" + "a".repeat(24);
    const error = await rejects(a.run({ app: "counter", input: {}, session: missing }), [404], /session not found/i);
    assert.equal(code(error), "SESSION_NOT_FOUND");
    await rejects(b.sessions.get(missing), [404], /session not found/i);
    await rejects(b.sessions.keepalive(missing), [404], /session not found/i);
    await rejects(b.tasks.get("t-unknown"), [404], /task not found/i);
    await rejects(a.run({ app: "nope", input: {} }), [404], /nope/);
    await rejects(
      a.run({ app: "counter", input: {}, session: "new", session_timeout: 99999 }),
      [400],
      /session_timeout/,
    );
    const stranger = inference({ apiKey: "not-a-token", baseUrl: urlA });
    await rejects(stranger.run({ app: "counter", input: {} }), [401], /./);
  },

  // An idle session expires: get says so, and a call on it raises (410 SESSION_EXPIRED).
  async expiry({ a, b, stream }) {
    const first = await a.run({ app: "counter", input: { add: 1 }, session: "new", session_timeout: 2 }, { stream });
    const sessionId = first.session_id!;
    const deadline = Date.now() + 60_000;
    while ((await b.sessions.get(sessionId)).data.status !== "expired") {
      assert.ok(Date.now() < deadline, `session ${sessionId} did not expire within 60 s`);
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
    const error = await rejects(
      b.run({ app: "counter", input: { add: 1 }, session: sessionId }),
      [404, 410],
      /session not found/i,
    );
    assert.ok(["SESSION_EXPIRED", "SESSION_NOT_FOUND"].includes(code(error)), code(error));
    await rejects(b.sessions.keepalive(sessionId), [404, 410], /session not found/i);
  },

  // Fire and forget through one replica; tasks.get and the follow through the other.
  async replicas({ a, b, stream }) {
    const task = await a.run(
      { app: "counter", input: { add: 2 }, session: "new", session_timeout: 120 },
      { wait: false },
    );
    assert.ok(task.id && task.session_id, JSON.stringify(task));
    const done = await b.tasks.watch(task, { stream }).done;
    assert.deepEqual(done.output, { total: 2, calls: 1 });
    assert.equal(done.session_id, task.session_id);
    const read: Task = (await b.tasks.get(task.id)).data;
    assert.equal(parseStatus(read.status), TaskStatusCompleted);
    assert.equal(read.session_id, task.session_id);
    assert.deepEqual(read.output, { total: 2, calls: 1 });
    assert.equal(read.error ?? null, null);
    // Read again through the first replica: they agree, and nothing ran twice.
    assert.deepEqual((await a.tasks.get(task.id)).data.output, read.output);
    const again = await b.run({ app: "counter", input: { add: 1 }, session: task.session_id! }, { stream });
    assert.deepEqual(again.output, { total: 3, calls: 2 });
    await b.sessions.end(task.session_id!);
  },

  // A queued task cancelled through the other replica never runs; its follower hears "cancelled".
  async cancel({ a, b, stream }) {
    const started = await a.run({ app: "slow", input: { seconds: 0 }, session: "new", session_timeout: 120 }, { stream });
    const session = started.session_id!;
    const held = await a.run({ app: "slow", input: { seconds: 3 }, session }, { wait: false });
    const queued = await a.run({ app: "slow", input: { seconds: 0 }, session }, { wait: false });
    // Handled from the start: Node ends the process on a rejection left unhandled for a moment.
    const following = assert.rejects(b.tasks.watch(queued, { stream }).done, /task cancelled/);
    const cancelled = (await b.tasks.cancel(queued.id)).data;
    assert.equal(parseStatus(cancelled.status), TaskStatusCancelled, JSON.stringify(cancelled));
    await following;
    assert.deepEqual((await b.tasks.watch(held, { stream }).done).output, { slept: 3 });
    assert.equal(parseStatus((await a.tasks.get(queued.id)).data.status), TaskStatusCancelled);
    assert.equal((await a.sessions.get(session)).data.call_count, 2); // the cancelled call never ran
    await a.sessions.end(session);
  },

  // `function` names one of the app's functions; one it lacks fails the task with the worker's reason.
  async function({ a, b, stream }) {
    const first = await a.run({ app: "counter", input: { add: 4 }, session: "new", session_timeout: 120 }, { stream });
    const session = first.session_id!;
    const peeked = await b.run({ app: "counter", function: "peek", input: {}, session }, { stream });
    assert.deepEqual(peeked.output, { total: 4, calls: 1 });
    const reset = await a.run({ app: "counter@v1:reset", input: { to: 10 }, session }, { stream });
    assert.equal((reset.output as { total: number }).total, 10);
    // Followed through the other replica: the worker keeps the refusal under the task's call id.
    const task = await a.run({ app: "counter", function: "navigate", input: {}, session }, { wait: false });
    await assert.rejects(b.tasks.watch(task, { stream }).done, /unknown function 'navigate'; this app has: peek, reset, run/);
    const failed: Task = (await b.tasks.get(task.id)).data;
    assert.equal(parseStatus(failed.status), TaskStatusFailed);
    assert.match(failed.error ?? "", /unknown function/);
    await a.sessions.end(session);
  },
};

const modes = (process.env.KS_FOLLOW ?? "stream").split(",") as Mode[];
for (const mode of modes) {
  for (const name of process.argv.slice(2)) {
    const flow = flows[name];
    assert.ok(flow, `no flow ${name}; there are: ${Object.keys(flows)}`);
    await flow(clients(mode));
    console.log(`ok ${name} ${mode}`);
  }
}
if (origin) {
  assert.ok(seen.preflights > 0 && seen.calls > 0, JSON.stringify(seen));
  console.log(`browser-like fetch from ${origin}: ${seen.preflights} preflights, ${seen.calls} calls`);
}
