// Drives the real @fal-ai/client against a self-hosted server; tests/clients/test_js_client.py asserts
// on the single JSON object printed to stdout. Usage: node scenarios.mjs <scenario> <json args>
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";

import { fal } from "@fal-ai/client";

const APP = "fal-ai/wan-vace-14b";
const [scenario, rawArgs] = process.argv.slice(2);
const args = JSON.parse(rawArgs);

// The one line a user adds: every client call goes to this server's built-in proxy route.
fal.config({ proxyUrl: { url: `${args.base}/api/fal/proxy`, when: "always" } });

const sha256 = (bytes) => createHash("sha256").update(bytes).digest("hex");

// Errors as plain data, so pytest can assert on what the client raised.
function describeError(error) {
  return {
    name: error.constructor.name,
    status: error.status,
    body: error.body,
    requestId: error.requestId,
    message: error.message,
  };
}

async function captureError(promise) {
  try {
    return { ok: (await promise) ?? null }; // queue.cancel resolves to undefined
  } catch (error) {
    return { error: describeError(error) };
  }
}

function summariseUpdates(updates) {
  return updates.map((u) => ({
    status: u.status,
    request_id: u.request_id,
    queue_position: u.queue_position,
    log_messages: (u.logs || []).map((l) => l.message),
  }));
}

async function downloadSha(url) {
  const response = await fetch(url);
  return { status: response.status, sha256: sha256(Buffer.from(await response.arrayBuffer())) };
}

const scenarios = {
  // One real generation: Blob auto-upload, logs, onQueueUpdate; a second request is queued behind it
  // and cancelled before it ever runs.
  async subscribe(a) {
    const updates = [];
    let queued = null;
    const input = {
      prompt: "a bar moving over a gradient",
      video_url: new Blob([readFileSync(a.video_path)], { type: "video/mp4" }),
      resolution: "240p",
      num_inference_steps: 2,
    };
    const onEnqueue = async (requestId) => {
      const { request_id } = await fal.queue.submit(`${APP}/depth`, { input: a.failing_input });
      const cancel = await captureError(fal.queue.cancel(APP, { requestId: request_id }));
      const status = await fal.queue.status(APP, { requestId: request_id, logs: false });
      const result = await captureError(fal.queue.result(APP, { requestId: request_id }));
      queued = { first: requestId, request_id, cancel, status, result };
    };
    const result = await fal.subscribe(`${APP}/depth`, {
      input,
      logs: true,
      onEnqueue,
      onQueueUpdate: (update) => updates.push(update),
    });
    return { requestId: result.requestId, data: result.data, updates: summariseUpdates(updates), queued };
  },

  // fal's current full example on the root endpoint (or the sub-path a.task), with the video as a Blob the
  // client uploads.
  async example(a) {
    const input = { ...a.input, video_url: new Blob([readFileSync(a.video_path)], { type: "video/mp4" }) };
    const result = await fal.subscribe(a.task ? `${APP}/${a.task}` : APP, { input });
    return { requestId: result.requestId, data: result.data };
  },

  // Fast-failing requests through every queue call, polling and SSE status, and the sync run route.
  async queue(a) {
    const submitted = await fal.queue.submit(`${APP}/depth`, { input: a.failing_input, priority: "low" });
    const requestId = submitted.request_id;
    const updates = [];
    await fal.queue.subscribeToStatus(APP, {
      requestId, logs: true, pollInterval: 200, onQueueUpdate: (u) => updates.push(u),
    });
    const status = await fal.queue.status(APP, { requestId, logs: true });
    const result = await captureError(fal.queue.result(APP, { requestId }));
    const cancelDone = await captureError(fal.queue.cancel(APP, { requestId }));

    const streamed = await fal.queue.submit(`${APP}/depth`, { input: a.failing_input });
    const streamUpdates = [];
    await fal.queue.subscribeToStatus(APP, {
      requestId: streamed.request_id, logs: true, mode: "streaming",
      onQueueUpdate: (u) => streamUpdates.push(u),
    });
    const stream = await fal.queue.streamStatus(APP, { requestId: streamed.request_id, logs: true });
    const streamEvents = [];
    for await (const event of stream) streamEvents.push(event);
    const streamDone = await stream.done();

    const run = await captureError(fal.run(`${APP}/depth`, { input: a.failing_input }));
    const missing = await captureError(fal.queue.status(APP, { requestId: a.unknown_id }));
    return {
      submitted, updates: summariseUpdates(updates), status, result, cancelDone,
      streamed: { request_id: streamed.request_id, updates: summariseUpdates(streamUpdates),
        events: summariseUpdates(streamEvents), done: streamDone },
      run, missing,
    };
  },

  // fal.storage.upload for a small Blob (single PUT) and a 91 MB one (multipart, 10 MB parts).
  async storage(a) {
    const small = Buffer.from("hello from the JS client ".repeat(100));
    const smallUrl = await fal.storage.upload(new Blob([small], { type: "text/plain" }));
    const big = Buffer.alloc(91 * 1024 * 1024);
    for (let i = 0; i < big.length; i += 4096) big[i] = (i / 4096) % 251;
    const bigUrl = await fal.storage.upload(new Blob([big], { type: "application/octet-stream" }));
    return {
      small: { url: smallUrl, expected: sha256(small), got: await downloadSha(smallUrl) },
      big: { url: bigUrl, expected: sha256(big), got: await downloadSha(bigUrl) },
    };
  },
};

const output = await scenarios[scenario](args);
process.stdout.write(JSON.stringify(output) + "\n");
