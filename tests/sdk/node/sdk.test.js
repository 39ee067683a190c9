// The official OpenAI Node SDK (npm `openai`, pinned 4.104.0: 4.x still has
// `beta.threads`) as a real client of a real `weft serve`.
//
// The file starts the `weft` binary (WEFT_BIN) on a free loopback port with a
// fresh SQLite database in a temp dir, mints tokens with `weft token`, and
// drives the threads/messages API through `client.beta.threads`, exactly as
// an application would. Run by scripts/test.sh (`--sdk-only node` alone);
// `node` finds the SDK through NODE_PATH (target/sdk-node/node_modules).
'use strict';

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { spawn, execFileSync } = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const OpenAI = require('openai');

const SECRET = 'sdk-node-test-secret-0123456789abcdef0123456789';
const BIN = path.resolve(process.env.WEFT_BIN || 'target/debug/weft');

let server;
let base;
let env;
let tmp;

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

async function waitReady(url, child) {
  const deadline = Date.now() + 60_000;
  for (;;) {
    assert.equal(child.exitCode, null, 'weft exited during start-up');
    try {
      const r = await fetch(url);
      if (r.status === 200) return;
    } catch {
      // not listening yet
    }
    assert.ok(Date.now() < deadline, 'weft did not become ready within 60 s');
    await new Promise((r) => setTimeout(r, 200));
  }
}

function token(user) {
  const out = execFileSync(BIN, ['token', '--user', user], { env, cwd: tmp, encoding: 'utf8' });
  return out.trim().split('\n').pop();
}

function clientFor(user, maxRetries = 0) {
  return new OpenAI({ apiKey: token(user), baseURL: `${base}/v1`, maxRetries });
}

async function collect(iterable) {
  const out = [];
  for await (const item of iterable) out.push(item);
  return out;
}

/** The value of one exact series of /metrics, 0 when absent. */
async function metric(series) {
  const text = await (await fetch(`${base}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line ? Number(line.slice(series.length + 1)) : 0;
}

before(async () => {
  assert.ok(fs.existsSync(BIN), `build the weft binary first (${BIN})`);
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'weft-sdk-node-'));
  const port = await freePort();
  env = {
    ...process.env,
    WEFT_DATABASE_URL: `sqlite://${tmp}/weft.db`,
    WEFT_BIND: `127.0.0.1:${port}`,
    WEFT_JWT_SECRET: SECRET,
    WEFT_LOG: 'warn',
  };
  base = `http://127.0.0.1:${port}`;
  server = spawn(BIN, ['serve'], { env, cwd: tmp, stdio: ['ignore', 'inherit', 'inherit'] });
  await waitReady(`${base}/readyz`, server);
});

after(async () => {
  if (!server || server.exitCode !== null) return;
  const exited = new Promise((r) => server.once('exit', r));
  server.kill('SIGTERM');
  const timer = setTimeout(() => server.kill('SIGKILL'), 20_000);
  await exited;
  clearTimeout(timer);
});

test('a full conversation lifecycle through the SDK, auto-paginating both ways', async () => {
  const client = clientFor('node-alice');
  const thread = await client.beta.threads.create({
    messages: [{ role: 'user', content: 'Why did our GPU bill go up?' }],
    metadata: { project: 'alpha' },
  });
  assert.match(thread.id, /^thread_/);
  assert.deepEqual(thread.metadata, { project: 'alpha' });

  const created = [];
  for (let i = 0; i < 25; i++) {
    const role = i % 2 ? 'assistant' : 'user';
    const m = await client.beta.threads.messages.create(thread.id, { role, content: `message ${i}` });
    assert.equal(m.thread_id, thread.id);
    assert.equal(m.content[0].type, 'text');
    assert.equal(m.content[0].text.value, `message ${i}`);
    created.push(m.id);
  }

  // Auto-pagination walks every page with after=last_id, in both orders.
  const asc = (await collect(client.beta.threads.messages.list(thread.id, { order: 'asc', limit: 7 }))).map((m) => m.id);
  assert.equal(asc.length, 26);
  assert.deepEqual(asc.slice(1), created);
  const desc = (await collect(client.beta.threads.messages.list(thread.id, { order: 'desc', limit: 4 }))).map((m) => m.id);
  assert.deepEqual(desc, [...asc].reverse());
  const page = await client.beta.threads.messages.list(thread.id, { order: 'asc', limit: 10 });
  assert.equal(page.data.length, 10);
  assert.equal(page.hasNextPage(), true);
  const next = await page.getNextPage();
  assert.deepEqual(next.data.map((m) => m.id), asc.slice(10, 20));

  const got = await client.beta.threads.messages.retrieve(thread.id, created[3]);
  assert.equal(got.id, created[3]);
  assert.equal(got.role, 'assistant');

  const updated = await client.beta.threads.update(thread.id, { metadata: { stage: 'review' } });
  assert.deepEqual(updated.metadata, { project: 'alpha', stage: 'review' });
  const m = await client.beta.threads.messages.update(thread.id, created[0], { metadata: { k: 'v' } });
  assert.deepEqual(m.metadata, { k: 'v' });
  assert.equal((await client.beta.threads.retrieve(thread.id)).id, thread.id);

  assert.equal((await client.beta.threads.messages.del(thread.id, created[0])).deleted, true);
  assert.equal((await client.beta.threads.del(thread.id)).deleted, true);
  await assert.rejects(client.beta.threads.retrieve(thread.id), OpenAI.NotFoundError);
});

test('image parts are accepted and returned in OpenAI form', async () => {
  const client = clientFor('node-images');
  const thread = await client.beta.threads.create();
  const m = await client.beta.threads.messages.create(thread.id, {
    role: 'user',
    content: [
      { type: 'image_url', image_url: { url: 'https://example.com/cat.png' } },
      { type: 'image_file', image_file: { file_id: 'file-abc', detail: 'low' } },
      { type: 'text', text: 'What is this?' },
    ],
  });
  assert.deepEqual(m.content, [
    { type: 'image_url', image_url: { url: 'https://example.com/cat.png', detail: 'auto' } },
    { type: 'image_file', image_file: { file_id: 'file-abc', detail: 'low' } },
    { type: 'text', text: { value: 'What is this?', annotations: [] } },
  ]);
});

test('errors surface as the SDK error classes', async () => {
  const alice = clientFor('node-alice-2');
  const bob = clientFor('node-bob');
  const thread = await alice.beta.threads.create();
  await assert.rejects(bob.beta.threads.retrieve(thread.id), OpenAI.NotFoundError);
  await assert.rejects(
    bob.beta.threads.messages.create(thread.id, { role: 'user', content: 'hi' }),
    OpenAI.NotFoundError,
  );
  await assert.rejects(
    alice.beta.threads.messages.create(thread.id, { role: 'system', content: 'hi' }),
    OpenAI.BadRequestError,
  );
  const meta = Object.fromEntries(Array.from({ length: 17 }, (_, i) => [`k${i}`, 'v']));
  await assert.rejects(alice.beta.threads.update(thread.id, { metadata: meta }), OpenAI.BadRequestError);
  const stranger = new OpenAI({ apiKey: 'not-a-jwt', baseURL: `${base}/v1`, maxRetries: 0 });
  await assert.rejects(stranger.beta.threads.create(), OpenAI.AuthenticationError);
});

test('a reused Idempotency-Key is a ConflictError the SDK does not retry', async () => {
  const client = clientFor('node-idem', 2);
  const series = 'weft_http_requests_total{method="POST",route="/v1/threads",status="409"}';
  const opts = { headers: { 'Idempotency-Key': 'node-reused-key' } };
  const first = await client.beta.threads.create({ metadata: { n: '1' } }, opts);
  const replay = await client.beta.threads.create({ metadata: { n: '1' } }, opts);
  assert.equal(replay.id, first.id);
  const before409 = await metric(series);
  await assert.rejects(client.beta.threads.create({ metadata: { n: '2' } }, opts), OpenAI.ConflictError);
  assert.equal(await metric(series), before409 + 1, 'sent once: x-should-retry: false was obeyed');
});

// Issue 9 item 2: paging on from a `before` list sends `after` and `before`
// together. Alone: scripts/test.sh --sdk-only node --test-name-pattern=window
test('window: auto-paginating a before list sends after and before together', async () => {
  const client = clientFor('node-window');
  const thread = await client.beta.threads.create();
  const ids = [];
  for (let i = 0; i < 10; i++) {
    ids.push((await client.beta.threads.messages.create(thread.id, { role: 'user', content: `w${i}` })).id);
  }
  // The 3 nearest before ids[8]; page 2 (after=ids[7], before=ids[8]) is empty.
  const first = await client.beta.threads.messages.list(thread.id, { before: ids[8], limit: 3, order: 'asc' });
  assert.deepEqual(first.data.map((m) => m.id), ids.slice(5, 8));
  assert.equal(first.hasNextPage(), true, 'the SDK asks for a second page');
  const all = await collect(client.beta.threads.messages.list(thread.id, { before: ids[8], limit: 3, order: 'asc' }));
  assert.deepEqual(all.map((m) => m.id), ids.slice(5, 8));
  const desc = await collect(client.beta.threads.messages.list(thread.id, { before: ids[2], limit: 3, order: 'desc' }));
  assert.deepEqual(desc.map((m) => m.id), [ids[5], ids[4], ids[3]]);
  // An explicit window, paged over several pages from its `after` side.
  const between = await collect(client.beta.threads.messages.list(thread.id, { after: ids[1], before: ids[8], limit: 2, order: 'asc' }));
  assert.deepEqual(between.map((m) => m.id), ids.slice(2, 8));
  const betweenDesc = await collect(client.beta.threads.messages.list(thread.id, { after: ids[8], before: ids[1], limit: 2, order: 'desc' }));
  assert.deepEqual(betweenDesc.map((m) => m.id), ids.slice(2, 8).reverse());
});
