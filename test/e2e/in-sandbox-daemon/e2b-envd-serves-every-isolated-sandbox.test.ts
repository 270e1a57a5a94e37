/**
 * The in-sandbox daemon (packages/envd, E2B's envd interface) on the real containerd, runc and
 * runsc, through the embedded control plane: every Isolated sandbox answers on
 * http://<status.sandboxIP>:49983 from the host, in Connect JSON over HTTP/1.1 as E2B's SDKs speak
 * it — /health; a command whose stdout and stderr stream while it runs and whose non-zero exit code
 * ends the stream; stdin sent then closed; a PTY; a file written, read and listed; a watch event.
 * The daemon keeps serving after the user's command exited, whose exit code the helper still
 * records, and it refuses the helper's own files. A caller inside the sandbox (the loopback, its own
 * address) gets /health only. Deleting the sandboxes leaves nothing in containerd.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import type { CreatedSandbox } from "@fast-sandbox/sdk";
import { BASE_IMAGE, containerdLeftovers, pool, startEmbedded, waitFor, type EmbeddedCase } from "../../support/embedded.js";

const ENVD_PORT = 49983;

/** One Connect envelope: flags (0x02 ends the stream) and its JSON. */
interface Envelope {
  flags: number;
  message: Record<string, unknown>;
  atMs: number;
}

function envelope(message: unknown): Uint8Array {
  const json = new TextEncoder().encode(JSON.stringify(message));
  const framed = new Uint8Array(5 + json.length);
  new DataView(framed.buffer).setUint32(1, json.length);
  framed.set(json, 5);
  return framed;
}

/** A Connect server stream: each envelope as it arrives (onEnvelope sees them live). */
async function serverStream(
  url: string,
  message: unknown,
  onEnvelope?: (envelope: Envelope) => void | Promise<void>,
  signal?: AbortSignal,
): Promise<Envelope[]> {
  const started = performance.now();
  const response = await fetch(url, {
    method: "POST",
    headers: { "Content-Type": "application/connect+json", "Keepalive-Ping-Interval": "50" },
    body: envelope(message),
    ...(signal ? { signal } : {}),
  });
  assert.equal(response.status, 200, `${url}: ${response.status}`);
  const envelopes: Envelope[] = [];
  let buffered = new Uint8Array(0);
  const reader = response.body!.getReader();
  for (;;) {
    const { done, value } = await reader.read().catch((error: unknown) => {
      if (signal?.aborted) return { done: true, value: undefined };
      throw error;
    });
    if (done) break;
    const joined = new Uint8Array(buffered.length + value.length);
    joined.set(buffered);
    joined.set(value, buffered.length);
    buffered = joined;
    while (buffered.length >= 5) {
      const length = new DataView(buffered.buffer, buffered.byteOffset).getUint32(1);
      if (buffered.length < 5 + length) break;
      const parsed: Envelope = {
        flags: buffered[0] ?? 0,
        message: JSON.parse(new TextDecoder().decode(buffered.subarray(5, 5 + length))) as Record<string, unknown>,
        atMs: performance.now() - started,
      };
      buffered = buffered.slice(5 + length);
      envelopes.push(parsed);
      await onEnvelope?.(parsed);
    }
  }
  return envelopes;
}

async function unary(url: string, message: unknown): Promise<{ status: number; body: Record<string, unknown> }> {
  const response = await fetch(url, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(message) });
  return { status: response.status, body: (await response.json()) as Record<string, unknown> };
}

type ProcessEvent = {
  start?: { pid: number };
  data?: { stdout?: string; stderr?: string; pty?: string };
  end?: { exitCode?: number; exited?: boolean; status?: string };
};
const eventOf = (envelope: Envelope) => (envelope.message.event ?? {}) as ProcessEvent;
const text = (base64?: string) => (base64 ? Buffer.from(base64, "base64").toString() : "");

for (const runtimeType of ["container", "gvisor"] as const) {
  describe(`the in-sandbox daemon of an Isolated ${runtimeType === "gvisor" ? "runsc" : "runc"} sandbox`, () => {
    let embedded: EmbeddedCase;
    let sandbox: CreatedSandbox;
    let daemon: string;

    before(async () => {
      embedded = await startEmbedded({ name: `envd-${runtimeType}`, pools: [pool("default", { maxSandboxesPerPod: 2, runtimeType })] });
      // The user's command exits after a while; the sandbox and its daemon stay.
      sandbox = await embedded.client.sandboxes.create({ pool: "default", image: BASE_IMAGE, command: ["sh", "-c", "sleep 2; exit 5"] });
      assert.ok(sandbox.status?.sandboxIP, "an Isolated sandbox has an address of its own");
      daemon = `http://${sandbox.status.sandboxIP}:${ENVD_PORT}`;
      await waitFor(async () => (await fetch(`${daemon}/health`).catch(() => undefined))?.status === 204, 20_000, `${daemon}/health`);
    });

    after(async () => {
      if (!embedded) return;
      const { client, containerdNamespace } = embedded;
      try {
        if (sandbox) await client.sandboxes.delete(sandbox.metadata.name);
        assert.deepEqual(containerdLeftovers(containerdNamespace), { containers: [], tasks: [], snapshots: [] });
      } finally {
        await embedded.stop();
      }
    });

    it("answers /health with 204", async () => {
      const response = await fetch(`${daemon}/health`);
      assert.equal(response.status, 204);
    });

    it("streams a command's output while it runs, then its non-zero exit code", async () => {
      // What E2B's commands.run sends (the busybox image has no bash: the daemon runs it with /bin/sh).
      // The command goes on only once the test has its first line (a file the test makes then), so a
      // daemon that held the output until the end would see the command give up after 30 s (exit 99).
      const go = `/tmp/go-${process.pid}-${Date.now()}`;
      const script = `echo one; i=0; while [ ! -e ${go} ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done; [ -e ${go} ] || exit 99; echo two >&2; exit 7`;
      const order: string[] = [];
      const envelopes = await serverStream(
        `${daemon}/process.Process/Start`,
        { process: { cmd: "/bin/bash", args: ["-l", "-c", script] }, stdin: false },
        async (envelope) => {
          if (envelope.flags !== 0) return;
          const event = eventOf(envelope);
          if (event.data?.stdout) {
            order.push("stdout");
            const touched = await serverStream(`${daemon}/process.Process/Start`, { process: { cmd: "/bin/sh", args: ["-c", `touch ${go}`] }, stdin: false });
            const touchEnd = touched.map(eventOf).find((e) => e.end)?.end;
            assert.equal(touchEnd?.exitCode ?? 0, 0, `touch ${go}: ${JSON.stringify(touchEnd)}`);
            order.push("released");
          }
          if (event.data?.stderr) order.push("stderr");
          if (event.end) order.push("end");
        },
      );
      const events = envelopes.filter((e) => e.flags === 0).map(eventOf);
      assert.ok(events[0]?.start?.pid, `the first event is start: ${JSON.stringify(events[0])}`);
      const stdout = envelopes.find((e) => eventOf(e).data?.stdout);
      const end = envelopes.find((e) => eventOf(e).end);
      assert.equal(text(eventOf(stdout!).data?.stdout), "one\n");
      assert.equal(events.map((e) => text(e.data?.stderr)).join(""), "two\n");
      assert.deepEqual(eventOf(end!).end, { exitCode: 7, exited: true, status: "exit status 7", error: "exit status 7" });
      assert.deepEqual(order, ["stdout", "released", "stderr", "end"], "the first line arrived while the command waited for the test");
      assert.deepEqual(envelopes.at(-1), { ...envelopes.at(-1), flags: 2, message: {} });
    });

    it("passes stdin to a command and closes it", async () => {
      const envelopes = await serverStream(
        `${daemon}/process.Process/Start`,
        { process: { cmd: "/bin/sh", args: ["-c", "cat; echo closed"] }, stdin: true },
        async (e) => {
          const pid = eventOf(e).start?.pid;
          if (!pid) return;
          const sent = await unary(`${daemon}/process.Process/SendInput`, { process: { pid }, input: { stdin: Buffer.from("hello\n").toString("base64") } });
          assert.equal(sent.status, 200, JSON.stringify(sent.body));
          const closed = await unary(`${daemon}/process.Process/CloseStdin`, { process: { pid } });
          assert.equal(closed.status, 200, JSON.stringify(closed.body));
        },
      );
      const stdout = envelopes.map((e) => text(eventOf(e).data?.stdout)).join("");
      assert.equal(stdout, "hello\nclosed\n");
      assert.equal(envelopes.map(eventOf).find((event) => event.end)?.end?.exitCode ?? 0, 0);
    });

    it("runs a PTY of the requested size that reads what is typed", async () => {
      const envelopes = await serverStream(
        `${daemon}/process.Process/Start`,
        { process: { cmd: "/bin/sh", args: ["-c", "stty size; read line; echo got:$line"] }, pty: { size: { cols: 90, rows: 33 } } },
        async (e) => {
          const pid = eventOf(e).start?.pid;
          if (!pid) return;
          const sent = await unary(`${daemon}/process.Process/SendInput`, { process: { pid }, input: { pty: Buffer.from("typed\n").toString("base64") } });
          assert.equal(sent.status, 200, JSON.stringify(sent.body));
        },
      );
      const output = envelopes.map((e) => text(eventOf(e).data?.pty)).join("");
      assert.match(output, /33 90/);
      assert.match(output, /got:typed/);
    });

    it("writes, reads and lists a file, and reports its creation to a watch", async () => {
      const made = await unary(`${daemon}/filesystem.Filesystem/MakeDir`, { path: "/tmp/e2e" });
      assert.equal(made.status, 200, JSON.stringify(made.body));
      const events: Envelope[] = [];
      const watching = new AbortController();
      let started!: () => void;
      const watchStarted = new Promise<void>((resolve) => (started = resolve));
      const watch = serverStream(
        `${daemon}/filesystem.Filesystem/WatchDir`,
        { path: "/tmp/e2e" },
        (e) => {
          events.push(e);
          // WatchDirResponse's oneof members are its own fields: {"start":{}}, {"filesystem":{…}}.
          if ("start" in e.message) started();
          if (JSON.stringify(e.message).includes("hello.txt")) watching.abort();
        },
        watching.signal,
      );
      const within = <T>(promise: Promise<T>, what: string) =>
        Promise.race([promise, new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`no ${what} in 10 s`)), 10_000))]);
      await within(watchStarted, "start event of the watch");

      const form = new FormData();
      form.append("file", new Blob(["hello from the host\n"]), "/tmp/e2e/hello.txt");
      const written = await fetch(`${daemon}/files?path=/tmp/e2e/hello.txt`, { method: "POST", body: form });
      assert.equal(written.status, 200);
      assert.deepEqual(await written.json(), [{ name: "hello.txt", type: "file", path: "/tmp/e2e/hello.txt" }]);
      await within(watch, "watch event");
      const event = events.map((e) => (e.message as { filesystem?: { name: string; type: string } }).filesystem).find(Boolean);
      assert.deepEqual(event, { name: "hello.txt", type: "EVENT_TYPE_CREATE" });

      const read = await fetch(`${daemon}/files?path=/tmp/e2e/hello.txt`);
      assert.equal(await read.text(), "hello from the host\n");
      const listed = await unary(`${daemon}/filesystem.Filesystem/ListDir`, { path: "/tmp/e2e", depth: 1 });
      const entries = listed.body.entries as { name: string; type: string; size: string; permissions: string }[];
      assert.deepEqual(
        entries.map(({ name, type, size, permissions }) => ({ name, type, size, permissions })),
        [{ name: "hello.txt", type: "FILE_TYPE_FILE", size: "20", permissions: "-rw-r--r--" }],
      );
      const missing = await fetch(`${daemon}/files?path=/tmp/e2e/missing`);
      assert.equal(missing.status, 404);
      assert.equal(((await missing.json()) as { code: number }).code, 404);
    });

    it("answers a caller inside the sandbox (the loopback, its own address) only on /health and GET /envs, and the host on every route", async () => {
      const name = sandbox.metadata.name;
      const inside = async (url: string) => {
        // busybox wget -S prints the status line on stderr, and exits non-zero on a 4xx.
        const fetched = await embedded.client.sandboxes.exec(name, ["sh", "-c", `wget -q -S -O - ${url} 2>&1; true`]);
        return fetched.stdout;
      };
      for (const address of ["127.0.0.1", sandbox.status?.sandboxIP ?? "the sandbox's address"]) {
        assert.match(await inside(`http://${address}:${ENVD_PORT}/health`), /HTTP\/1\.1 204/, `${address}/health`);
        // E2B's own template server reads its environment this way: the sandbox's own, nothing more.
        const envs = await inside(`http://${address}:${ENVD_PORT}/envs`);
        assert.match(envs, /HTTP\/1\.1 200/, `${address}/envs from inside: ${envs}`);
        assert.match(envs, /"PATH"/);
        const files = await inside(`http://${address}:${ENVD_PORT}/files?path=/etc/hostname`);
        assert.match(files, /HTTP\/1\.1 403/, `${address}/files from inside: ${files}`);
        const rpc = await embedded.client.sandboxes.exec(name, [
          "sh",
          "-c",
          `wget -q -S -O - --header 'Content-Type: application/json' --post-data '{}' http://${address}:${ENVD_PORT}/process.Process/List 2>&1; true`,
        ]);
        // 403 is Connect's permission_denied (busybox wget shows no body of a refusal).
        assert.match(rpc.stdout, /HTTP\/1\.1 403/, `${address} List from inside: ${rpc.stdout}`);
      }
      const envs = await fetch(`${daemon}/envs`);
      assert.equal(envs.status, 200, "the host (outside the sandbox's network) is served");
      assert.ok(typeof ((await envs.json()) as Record<string, string>).PATH === "string");
    });

    it("keeps serving after the user's command exited, whose exit code the helper recorded, and keeps its files out of reach", async () => {
      await waitFor(
        async () => (await embedded.client.sandboxes.exec(sandbox.metadata.name, ["cat", "/.fast-sandbox/run/exit-code"])).stdout === "5\n",
        20_000,
        "the command's exit code 5 in the helper's record",
      );
      assert.equal((await fetch(`${daemon}/health`)).status, 204);
      const stat = await unary(`${daemon}/filesystem.Filesystem/Stat`, { path: "/tmp/../.fast-sandbox/run/exit-code" });
      assert.equal(stat.status, 403);
      assert.equal(stat.body.code, "permission_denied");
      const unknown = await unary(`${daemon}/process.Process/SendSignal`, { process: { pid: 99999 }, signal: "SIGNAL_SIGKILL" });
      assert.deepEqual([unknown.status, unknown.body.code], [404, "not_found"]);
    });
  });
}
