/**
 * E2B's official JS SDK (npm `e2b`, pinned in the root package.json) on the data plane of a real
 * embedded Fast Sandbox — through the sandbox proxy to the in-sandbox daemon — with nothing but the
 * three variables `fsb e2b env` prints: `commands.run` with streamed output and exit codes, a
 * background command with `wait`/`kill`, stdin, a PTY with resize, `files.write`/`read`/`list`/
 * `watchDir`, upload and download URLs, then `setTimeout`, list, connect and kill. Written from
 * E2B's public documentation, as a user of the SDK would.
 */
import assert from "node:assert/strict";
import http from "node:http";
import { after, before, describe, it } from "node:test";
import { CommandExitError, FilesystemEventType, Sandbox, type FilesystemEvent } from "e2b";
import { containerdLeftovers, pool, startEmbedded, waitFor, type EmbeddedCase } from "../../support/embedded.js";
import { useFsbE2bEnv } from "../../support/e2b-env.js";

describe("E2B's official JS SDK on the data plane (commands, PTY, files, URLs)", () => {
  let embedded: EmbeddedCase;
  let restore: () => void = () => undefined;
  let sandbox: Sandbox;
  const run = Math.random().toString(36).slice(2, 10);

  before(async () => {
    embedded = await startEmbedded({ name: "e2b-js-data", pools: [pool("default", { maxSandboxesPerPod: 8 })] });
    restore = await useFsbE2bEnv(embedded);
    sandbox = await Sandbox.create({ metadata: { run }, envs: { GREETING: "hello-from-envs" }, timeoutMs: 300_000 });
  });

  after(async () => {
    await sandbox?.kill().catch(() => undefined);
    restore();
    await embedded.stop();
  });

  it("runs a command, streaming its output, and reports exit codes (CommandExitError)", async () => {
    const chunks: string[] = [];
    const result = await sandbox.commands.run("echo one; sleep 0.3; echo two; echo err >&2; echo $GREETING", { onStdout: (data) => void chunks.push(data) });
    assert.equal(result.exitCode, 0);
    assert.equal(result.stdout, "one\ntwo\nhello-from-envs\n");
    assert.equal(result.stderr, "err\n");
    assert.ok(chunks.length >= 2, `streamed in ${chunks.length} chunk(s)`);
    await assert.rejects(sandbox.commands.run("echo before; exit 3"), (error: unknown) => {
      assert.ok(error instanceof CommandExitError, String(error));
      assert.equal(error.exitCode, 3);
      assert.equal(error.stdout, "before\n");
      return true;
    });
  });

  it("runs a background command: wait for it, or kill it", async () => {
    const quick = await sandbox.commands.run("sleep 0.3; echo done", { background: true });
    assert.ok(quick.pid > 0);
    assert.equal((await quick.wait()).stdout, "done\n");
    const long = await sandbox.commands.run("sleep 600", { background: true });
    assert.ok((await sandbox.commands.list()).some((process) => process.pid === long.pid));
    assert.equal(await long.kill(), true);
    await assert.rejects(long.wait(), CommandExitError);
    assert.equal(await sandbox.commands.kill(999_999), false);
  });

  it("sends stdin to a running command", async () => {
    const handle = await sandbox.commands.run("head -n 2", { background: true, stdin: true });
    await sandbox.commands.sendStdin(handle.pid, "first line\n");
    await handle.sendStdin("second line\n");
    assert.equal((await handle.wait()).stdout, "first line\nsecond line\n");
  });

  it("opens a PTY, types into it and resizes it", async () => {
    let output = "";
    const decoder = new TextDecoder();
    const terminal = await sandbox.pty.create({ cols: 80, rows: 24, onData: (data) => void (output += decoder.decode(data, { stream: true })) });
    await sandbox.pty.resize(terminal.pid, { cols: 100, rows: 40 });
    await sandbox.pty.sendInput(terminal.pid, new TextEncoder().encode("stty size; echo pty-marker-$((6*7))\n"));
    await waitFor(() => output.includes("pty-marker-42"), 20_000, "the PTY's echo");
    assert.match(output, /40 100/);
    assert.equal(await sandbox.pty.kill(terminal.pid), true);
  });

  it("writes, reads and lists files, and sees them from commands", async () => {
    const written = await sandbox.files.write("/tmp/js-dir/hello.txt", "hello file\n");
    assert.equal(written.path, "/tmp/js-dir/hello.txt");
    assert.equal(await sandbox.files.read("/tmp/js-dir/hello.txt"), "hello file\n");
    await sandbox.files.write("/tmp/js-dir/data.bin", new Uint8Array([0, 1, 2]).buffer);
    assert.deepEqual([...(await sandbox.files.read("/tmp/js-dir/data.bin", { format: "bytes" }))], [0, 1, 2]);
    assert.deepEqual((await sandbox.files.list("/tmp/js-dir")).map((entry) => entry.name).sort(), ["data.bin", "hello.txt"]);
    assert.equal(await sandbox.files.exists("/tmp/js-dir/missing"), false);
    assert.equal((await sandbox.commands.run("cat /tmp/js-dir/hello.txt")).stdout, "hello file\n");
  });

  it("watches a directory", async () => {
    await sandbox.files.makeDir("/tmp/js-watched");
    const events: FilesystemEvent[] = [];
    const handle = await sandbox.files.watchDir("/tmp/js-watched", (event) => void events.push(event));
    try {
      await sandbox.files.write("/tmp/js-watched/new.txt", "x");
      await waitFor(() => events.some((event) => event.name === "new.txt"), 20_000, "a watch event for new.txt");
      assert.ok(events.some((event) => event.name === "new.txt" && [FilesystemEventType.CREATE, FilesystemEventType.WRITE].includes(event.type)));
    } finally {
      await handle.stop();
    }
  });

  it("many watches of one sandbox hold one inotify instance of the daemon, so they cannot use up the host's", async () => {
    // The kernel grants a user 128 inotify instances, and a runc sandbox's root is the host's.
    await sandbox.files.makeDir("/tmp/js-many-watched");
    const handles = [];
    try {
      for (let i = 0; i < 150; i++) handles.push(await sandbox.files.watchDir("/tmp/js-many-watched", () => undefined));
      // Every process of the sandbox: the daemon is the one that watches.
      const instances = await sandbox.commands.run("ls -l /proc/[0-9]*/fd 2>/dev/null | grep -c inotify || true", { user: "root" });
      assert.equal(instances.stdout.trim(), "1", "the sandbox's inotify instances");
    } finally {
      await Promise.all(handles.map((handle) => handle.stop()));
    }
  });

  it("moves a file system's tree as mv does: never into itself, and never half of one that holds a mount point", async () => {
    await sandbox.files.write("/tmp/js-move/a/file.txt", "a");
    await assert.rejects(sandbox.files.rename("/tmp/js-move/a", "/tmp/js-move/a/inner/b"), /a directory cannot be moved into itself/);
    assert.deepEqual(
      (await sandbox.files.list("/tmp/js-move/a")).map((entry) => entry.name),
      ["file.txt"],
    );
    // /etc is the image's (the overlay copies it up) and holds the runtime's bind mounts (hosts, resolv.conf).
    await assert.rejects(sandbox.files.rename("/etc", "/etc-moved"), /it holds a mount point, \/etc\/\S+, which cannot be moved/);
    assert.equal(await sandbox.files.exists("/etc-moved"), false);
    assert.match(await sandbox.files.read("/etc/passwd"), /^root:/);
  });

  it("uploads and downloads through signed URLs", async () => {
    const form = new FormData();
    form.append("file", new Blob(["uploaded through a signed URL\n"]), "uploaded.txt");
    const uploaded = await fetch(await sandbox.uploadUrl("/tmp/uploaded.txt"), { method: "POST", body: form });
    assert.equal(uploaded.status, 200, await uploaded.text());
    const downloaded = await fetch(await sandbox.downloadUrl("/tmp/uploaded.txt"));
    assert.equal(downloaded.status, 200);
    assert.equal(await downloaded.text(), "uploaded through a signed URL\n");
    const tampered = (await sandbox.downloadUrl("/tmp/uploaded.txt")).replace("uploaded.txt", "other.txt");
    assert.equal((await fetch(tampered)).status, 401);
  });

  it("a signed URL reaches only its own path: a query the daemon would read otherwise is refused, extras are dropped", async () => {
    await sandbox.files.write("/tmp/secret.txt", "not for the URL's holder\n");
    await sandbox.files.write("/tmp/public.txt", "public\n");
    const signed = await sandbox.downloadUrl("/tmp/public.txt");
    // fetch() would drop a '#' and everything after it: the raw request line goes out as written.
    const raw = (target: string) =>
      new Promise<{ status: number; body: string }>((resolve, reject) => {
        const url = new URL(signed);
        const request = http.request({ host: url.hostname, port: url.port, path: target, method: "GET" }, (response) => {
          let body = "";
          response.setEncoding("utf8");
          response.on("data", (chunk: string) => (body += chunk));
          response.on("end", () => resolve({ status: response.statusCode ?? 0, body }));
        });
        request.on("error", reject);
        request.end();
      });
    const { pathname, search } = new URL(signed);
    assert.deepEqual(await raw(`${pathname}${search}`), { status: 200, body: "public\n" });
    for (const forged of [`${pathname}${search}#/../secret.txt`, `${pathname}${search}&path=/tmp/secret.txt`, `${pathname}?path=/x;y&${search.slice(1)}`]) {
      const answer = await raw(forged);
      assert.equal(answer.status, 400, `${forged}: ${answer.status} ${answer.body}`);
      assert.ok(!answer.body.includes("not for the URL's holder"));
    }
    // A parameter the signature does not cover is not sent on: the daemon reads the signed path.
    assert.deepEqual(await raw(`${pathname}${search}&extra=1`), { status: 200, body: "public\n" });
  });

  it("re-times, lists, connects to and kills the sandbox", async () => {
    const before = (await sandbox.getInfo()).endAt;
    await sandbox.setTimeout(600_000);
    assert.ok((await sandbox.getInfo()).endAt.getTime() > before.getTime());
    const listed = await Sandbox.list({ query: { metadata: { run } } }).nextItems();
    assert.deepEqual(
      listed.map((info) => info.sandboxId),
      [sandbox.sandboxId],
    );
    const again = await Sandbox.connect(sandbox.sandboxId);
    assert.equal((await again.commands.run("echo connected")).stdout, "connected\n");
    assert.equal(await sandbox.kill(), true);
    await waitFor(async () => !(await sandbox.isRunning()), 20_000, "the sandbox to stop answering");
    assert.ok(!containerdLeftovers(embedded.containerdNamespace).containers.includes(sandbox.sandboxId));
  });
});
