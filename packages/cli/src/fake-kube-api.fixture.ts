/**
 * A stand-in for a cluster's Kubernetes API server, for the specs of `kubectl fs`: what discovery
 * reads of it (the controller's EndpointSlices, the token Secret) over plain HTTP on a loopback
 * port, every request recorded; or one that accepts connections and never answers. Also a kubeconfig
 * naming it, and the CLI run from source in a child process as `fsb` or as `kubectl fs`. Test code only.
 */
import { spawn } from "node:child_process";
import { writeFileSync } from "node:fs";
import { createServer, type ServerResponse } from "node:http";
import type { Socket } from "node:net";
import { join } from "node:path";
import { cliNodeArgs } from "./cli-program.fixture.js";

export interface FakeKubeApiOptions {
  /** The controller's endpoints its EndpointSlice lists, e.g. a fake control plane's. @default none */
  controllers?: { address: string; port: number }[];
  /** The token in Secret fast-sandbox-api-token. @default "fake-api-token-0123456789" */
  token?: string;
  /** Accept connections and requests, and never answer them. */
  hang?: boolean;
}

export interface FakeKubeApi {
  url: string;
  /** `GET /path?query auth=<Authorization header>`, in order. */
  requests: string[];
  close(): Promise<void>;
}

export async function startFakeKubeApi(options: FakeKubeApiOptions = {}): Promise<FakeKubeApi> {
  const requests: string[] = [];
  const sockets = new Set<Socket>();
  const json = (response: ServerResponse, code: number, body: unknown) => {
    response.writeHead(code, { "content-type": "application/json" });
    response.end(JSON.stringify(body));
  };
  const server = createServer((request, response) => {
    requests.push(`${request.method} ${request.url} auth=${request.headers.authorization ?? ""}`);
    if (options.hang) return;
    const path = new URL(request.url ?? "/", "http://x").pathname;
    if (path.endsWith("/endpointslices")) {
      const controllers = options.controllers ?? [];
      json(response, 200, {
        apiVersion: "discovery.k8s.io/v1",
        kind: "EndpointSliceList",
        metadata: {},
        items: [
          {
            metadata: { name: "fast-sandbox-controller-abcde" },
            addressType: "IPv4",
            endpoints: controllers.map((c, i) => ({
              addresses: [c.address],
              conditions: { ready: true },
              targetRef: { kind: "Pod", name: `controller-${i}` },
            })),
            ports: [{ name: "fast-path", port: controllers[0]?.port ?? 7070 }],
          },
        ],
      });
      return;
    }
    if (path.endsWith("/pods")) {
      json(response, 200, { apiVersion: "v1", kind: "PodList", metadata: {}, items: [] });
      return;
    }
    if (path.endsWith("/secrets/fast-sandbox-api-token")) {
      const token = Buffer.from(options.token ?? "fake-api-token-0123456789").toString("base64");
      json(response, 200, { apiVersion: "v1", kind: "Secret", metadata: { name: "fast-sandbox-api-token" }, data: { token } });
      return;
    }
    json(response, 404, { kind: "Status", apiVersion: "v1", status: "Failure", code: 404, reason: "NotFound", message: `${path} not found` });
  });
  server.on("connection", (socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as { port: number };
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
}

/**
 * Writes a kubeconfig with one context, `dev`, whose cluster is `server` (as given: an http:// one
 * without insecure-skip-tls-verify, as kubectl takes it) and whose user is `user` (YAML flow style).
 */
export function writeKubeconfig(path: string, server: string, options: { namespace?: string; user?: string } = {}): string {
  writeFileSync(
    path,
    [
      "apiVersion: v1",
      "kind: Config",
      "current-context: dev",
      `clusters: [{name: dev, cluster: {server: '${server}'}}]`,
      `users: [{name: dev, user: ${options.user ?? "{token: kube-token}"}}]`,
      `contexts: [{name: dev, context: {cluster: dev, user: dev${options.namespace ? `, namespace: ${options.namespace}` : ""}}}]`,
    ].join("\n"),
  );
  return path;
}

/**
 * This process's environment without what would point a CLI run from a test elsewhere (the
 * developer's own instance or cluster) or change its output: the Fast Sandbox variables, KUBECONFIG,
 * and node:test's own.
 */
export function withoutCliEnv(): NodeJS.ProcessEnv {
  const env = { ...process.env };
  for (const name of [
    "FSB_URL",
    "FSB_TOKEN",
    "FSB_ACCESS_TOKEN",
    "FSB_DATA_DIR",
    "FSB_DEBUG",
    "FSB_SYSTEM_NAMESPACE",
    "FSB_REQUEST_TIMEOUT",
    "KUBECONFIG",
    "NODE_TEST_CONTEXT",
  ])
    delete env[name];
  return env;
}

export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  ms: number;
}

const MAIN = join(import.meta.dirname, "main.ts");
const REPO_ROOT = join(import.meta.dirname, "..", "..", "..");

/**
 * Runs the CLI (its source, see cli-program.fixture.ts) with `args` and only the Fast Sandbox and kubeconfig variables of `env`;
 * as `kubectl fs` (the program name `kubectl-fs`, through an entry of that name in `directory`), or as
 * `fsb`. Killed after `killAfterMs`.
 */
export function runCli(
  as: "fsb" | "kubectl-fs",
  directory: string,
  env: NodeJS.ProcessEnv,
  args: string[],
  options: { killAfterMs?: number } = {},
): Promise<CliResult> {
  let sourceEntry = MAIN;
  if (as === "kubectl-fs") {
    sourceEntry = join(directory, "kubectl-fs.mts");
    writeFileSync(sourceEntry, `import ${JSON.stringify(MAIN)};\n`);
  }
  const childEnv = withoutCliEnv();
  Object.assign(childEnv, { FSB_DATA_DIR: join(directory, "no-data-dir"), HOME: join(directory, "no-home") }, env);
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const child = spawn(process.execPath, cliNodeArgs(args, { as, sourceEntry }), {
      cwd: REPO_ROOT,
      env: childEnv,
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
    const timer = setTimeout(() => child.kill("SIGKILL"), options.killAfterMs ?? 20_000);
    child.on("error", reject);
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr, ms: Date.now() - started });
    });
  });
}
