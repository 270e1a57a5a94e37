/**
 * ContainerdRuntime.exec's reading of the output after the process exited (exec-fifos.ts's
 * `drained`), against a fake containerd whose "shim" writes into the exec's FIFOs.
 */
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { closeSync, constants, mkdtempSync, openSync, rmSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { pino } from "pino";
import { LABEL_AGENT, LABEL_MANAGED, LABEL_SANDBOX_ID } from "../runtime/runtime.js";
import { createContainerdRuntime, type ContainerdRuntime } from "./containerd-runtime.js";

const roots: string[] = [];
after(() => {
  for (const root of roots) rmSync(root, { recursive: true, force: true });
});

type Handler = (request: Record<string, unknown>) => unknown;

/** A containerd client answering from `handlers` (`service.method`), an empty message otherwise. */
function fakeClient(handlers: Record<string, Handler>): unknown {
  const service = (name: string) =>
    new Proxy(
      {},
      {
        get: (_target, method: string) => async (request: Record<string, unknown>) => {
          const handler = handlers[`${name}.${method}`];
          return handler ? await handler(request) : {};
        },
      },
    );
  const target: Record<string, unknown> = { close: () => undefined };
  return new Proxy(target, { get: (target, name: string) => (name in target ? target[name] : service(name)) });
}

const SANDBOX_LABELS = { [LABEL_MANAGED]: "true", [LABEL_AGENT]: "agent-0", [LABEL_SANDBOX_ID]: "sb-1" };

function sandboxContainer(): Handler {
  const spec = { process: { args: ["sleep"], env: ["PATH=/bin"], cwd: "/", user: { uid: 0, gid: 0 } } };
  return () => ({ container: { id: "sb-1", labels: SANDBOX_LABELS, spec: { typeUrl: "", value: Buffer.from(JSON.stringify(spec)) } } });
}

/** A runtime whose containerd is `client`; what it logs goes to `logs`. */
function runtimeWith(client: unknown, logs: { level: number; msg: string }[]): ContainerdRuntime {
  const stateDir = mkdtempSync(join(tmpdir(), "fsb-runtime-exec-output-"));
  roots.push(stateDir);
  const runtime = createContainerdRuntime({
    agentName: "agent-0",
    socketPath: join(stateDir, "no-containerd.sock"),
    stateDir,
    cgroupLayout: { version: 2, root: stateDir, controllers: [] },
    runscPath: "/bin/true",
    logger: pino({ level: "debug" }, { write: (line: string) => void logs.push(JSON.parse(line) as { level: number; msg: string }) }),
  });
  (runtime as unknown as { client: { close(): void } }).client.close();
  (runtime as unknown as { client: unknown }).client = client;
  return runtime;
}

const WARN = 40;

describe("ContainerdRuntime.exec's output after the exit", () => {
  it("does not cut off a background process's endless output silently: it logs a warning", async () => {
    const children: ChildProcess[] = [];
    const client = fakeClient({
      "containers.get": sandboxContainer(),
      // The "shim": a background child of the process writes on to its stdout after the process exited.
      "tasks.exec": (request) => {
        const fd = openSync(String(request.stdout), constants.O_WRONLY);
        try {
          children.push(spawn("yes", [], { stdio: ["ignore", fd, "ignore"] }));
        } finally {
          closeSync(fd);
        }
        return {};
      },
      "tasks.wait": () => ({ exitStatus: 0 }),
    });
    const logs: { level: number; msg: string }[] = [];
    const runtime = runtimeWith(client, logs);
    let bytes = 0;
    try {
      const exitCode = await runtime.exec(
        "sb-1",
        { command: ["sh", "-c", "yes &"] },
        { onStdout: (chunk) => void (bytes += chunk.byteLength), onStderr: () => undefined },
      );
      assert.equal(exitCode, 0);
    } finally {
      for (const child of children) child.kill();
      runtime.close();
    }
    assert.ok(bytes > 0);
    const warnings = logs.filter((log) => log.level >= WARN && /kept writing/.test(log.msg));
    assert.equal(warnings.length, 1, JSON.stringify(logs.map((log) => log.msg)));
  });

  it("stops reading as soon as the caller goes away, though its consumer still holds the output back", { timeout: 30_000 }, async () => {
    let held: number | undefined;
    const client = fakeClient({
      "containers.get": sandboxContainer(),
      "tasks.exec": (request) => {
        held = openSync(String(request.stdout), constants.O_WRONLY | constants.O_NONBLOCK);
        writeSync(held, "x");
        return {};
      },
      "tasks.wait": () => new Promise((resolve) => setTimeout(() => resolve({ exitStatus: 0 }), 50)),
    });
    const runtime = runtimeWith(client, []);
    const gone = new AbortController();
    try {
      const exec = runtime.exec(
        "sb-1",
        { command: ["true"] },
        // A client that stopped reading: the chunk is never taken.
        { onStdout: () => new Promise<void>(() => undefined), onStderr: () => undefined, signal: gone.signal },
      );
      await new Promise((resolve) => setTimeout(resolve, 300));
      gone.abort();
      // Without the abort reaching the drain, the paused stream is never read again: the exec never
      // ends, and the test's own timeout fails it.
      assert.equal(await exec, 0);
    } finally {
      if (held !== undefined) closeSync(held);
      runtime.close();
    }
  });
});
