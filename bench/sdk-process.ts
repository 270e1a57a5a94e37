/**
 * `bench create --sdk-process`: the fast-sandbox side's SDK in a process of its own, as a user's
 * program is, instead of in the bench's process beside the embedded control plane (where one event
 * loop serves both ends of the SDK's hop, and no third process has to wake for an answer).
 *
 * The child (this file, `--sdk-child`, forked with the bench's own Node.js flags) holds one
 * `FastSandboxClient` for the run. For each burst the bench sends it the creates; it starts them
 * together and times each exactly as the in-process side does — `sandboxes.create()` from the call
 * to the resolved promise, in the child — and sends back the samples. The IPC message to the child
 * and back is outside every sample (it is inside the burst's wall time, ~0.1 ms). Only the timed
 * creates move: the bench's deletes, gets and clean-up stay in its own client.
 */
import { fork, type ChildProcess } from "node:child_process";
import { performance } from "node:perf_hooks";
import { fileURLToPath } from "node:url";
import { FastSandboxClient } from "@fast-sandbox/sdk";

/** One create the child makes. */
export interface ChildCreate {
  name: string;
  pool: string;
  image: string;
  command: string[];
  namespace?: string;
}

/** What the child reports of one create. */
export interface ChildCreated {
  name: string;
  /** From the call to the resolved promise, in the child (ms). */
  elapsedMs: number;
  sandboxID?: string;
  phase?: string;
}

type ToChild = { type: "burst"; id: number; creates: ChildCreate[] };
type FromChild = { type: "ready" } | { type: "burst"; id: number; created: ChildCreated[] } | { type: "error"; id: number; message: string };

/** The child's environment variables: the API's URL and token (not on its command line, which `ps` shows). */
const URL_ENV = "FSB_BENCH_SDK_URL";
const TOKEN_ENV = "FSB_BENCH_SDK_TOKEN";

/** The bench's end: a forked SDK process, one burst at a time. */
export class SdkProcess {
  private nextId = 0;
  private readonly pending = new Map<number, { done: (created: ChildCreated[]) => void; fail: (error: Error) => void }>();
  private exited: Error | undefined;

  private constructor(private readonly child: ChildProcess) {
    child.on("message", (message: FromChild) => {
      if (message.type === "ready") return;
      const waiting = this.pending.get(message.id);
      this.pending.delete(message.id);
      if (message.type === "burst") waiting?.done(message.created);
      else waiting?.fail(new Error(`SDK process: ${message.message}`));
    });
    child.on("exit", (code, signal) => {
      this.exited = new Error(`the SDK process exited (${signal ?? `code ${code}`})`);
      for (const waiting of this.pending.values()) waiting.fail(this.exited);
      this.pending.clear();
    });
  }

  /** Forks the child and waits until its client exists. */
  static async start(url: string, token: string): Promise<SdkProcess> {
    const child = fork(fileURLToPath(import.meta.url), ["--sdk-child"], {
      stdio: ["ignore", "inherit", "inherit", "ipc"],
      env: { ...process.env, [URL_ENV]: url, [TOKEN_ENV]: token },
    });
    await new Promise<void>((ready, fail) => {
      child.once("message", (message: FromChild) => (message.type === "ready" ? ready() : fail(new Error(`SDK process: ${JSON.stringify(message)}`))));
      child.once("exit", (code) => fail(new Error(`the SDK process exited before it was ready (code ${code})`)));
    });
    return new SdkProcess(child);
  }

  /** The child's pid, for its CPU time. */
  get pid(): number | undefined {
    return this.child.pid;
  }

  /** Has the child start `creates` together; resolves with each one's sample once all answered. */
  burst(creates: ChildCreate[]): Promise<ChildCreated[]> {
    if (this.exited) return Promise.reject(this.exited);
    const id = this.nextId++;
    return new Promise((done, fail) => {
      this.pending.set(id, { done, fail });
      const request: ToChild = { type: "burst", id, creates };
      this.child.send(request);
    });
  }

  /** Ends the child (its client closes with it). */
  async close(): Promise<void> {
    if (this.exited || this.child.exitCode !== null) return;
    const exited = new Promise((resolve) => this.child.once("exit", resolve));
    this.child.kill("SIGTERM");
    await exited;
  }
}

/** The child's side: one client, bursts as they come. */
function serve(): void {
  const url = process.env[URL_ENV];
  const token = process.env[TOKEN_ENV];
  if (!url || !token || !process.send) throw new Error(`sdk-process.ts --sdk-child runs forked by the bench, with ${URL_ENV} and ${TOKEN_ENV}`);
  const send = (message: FromChild) => process.send?.(message);
  const client = new FastSandboxClient({ url, token });
  process.on("message", (request: ToChild) => {
    void Promise.all(
      request.creates.map(async ({ name, pool, image, command, namespace }): Promise<ChildCreated> => {
        const t0 = performance.now();
        const sandbox = await client.sandboxes.create({ name, pool, image, command, ...(namespace === undefined ? {} : { namespace }) });
        const elapsedMs = performance.now() - t0;
        return {
          name,
          elapsedMs,
          ...(sandbox.status?.sandboxID ? { sandboxID: sandbox.status.sandboxID } : {}),
          ...(sandbox.status?.phase ? { phase: sandbox.status.phase } : {}),
        };
      }),
    ).then(
      (created) => send({ type: "burst", id: request.id, created }),
      (error: unknown) => send({ type: "error", id: request.id, message: error instanceof Error ? error.message : String(error) }),
    );
  });
  process.on("SIGTERM", () => {
    client.close();
    process.exit(0);
  });
  send({ type: "ready" });
}

if (process.argv.includes("--sdk-child")) serve();
