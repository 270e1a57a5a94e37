/**
 * `bench transport`: what one hop between two Node.js processes on loopback costs, by protocol —
 * the floor under each of a create's two hops (SDK → control plane → agent, both Connect over
 * HTTP/2) — with raw TCP as the baseline, measured in the same run.
 *
 * Method: a child process (this file, `--serve`) listens on four loopback ports: a TCP echo
 * (no delay), `node:http2` answering every request with an empty body, and Connect (the agent's
 * own service, `ListCheckpoints` answering an empty message, no interceptors) over HTTP/2 and over
 * HTTP/1.1 with keep-alive. This process sends `count` round trips over one kept-alive connection
 * per protocol, after `warmup` unrecorded ones, in rounds that rotate the protocols' order; once
 * back to back, and once with a `gapMs` pause before each call, as between creates (both processes
 * idle meanwhile, as a control plane and an agent are). The clients are the ones the product uses:
 * `createConnectTransport` of connect-node, binary messages.
 */
import { fork, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import http from "node:http";
import http2 from "node:http2";
import net from "node:net";
import { performance } from "node:perf_hooks";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import { createClient } from "@connectrpc/connect";
import { Http2SessionManager, connectNodeAdapter, createConnectTransport } from "@connectrpc/connect-node";
import { pb } from "@fast-sandbox/api/core";
import { summarize, type Summary } from "./stats.js";

export interface TransportBenchOptions {
  count: number;
  warmup: number;
  /** The pause before each call of the second pass (ms). */
  gapMs: number;
  log: (message: string) => void;
}

export const PROTOCOLS = ["tcp", "http2", "connect-h2", "connect-h1"] as const;
export type Protocol = (typeof PROTOCOLS)[number];

export interface TransportBenchResult {
  benchmark: "transport";
  count: number;
  warmup: number;
  gapMs: number;
  backToBack: Record<Protocol, Summary>;
  withGap: Record<Protocol, Summary>;
}

type Ports = Record<Protocol, number>;

/** The child's side: serves the four protocols and sends their ports to the parent. */
async function serve(): Promise<void> {
  const listen = (server: net.Server) =>
    new Promise<number>((resolve) => server.listen(0, "127.0.0.1", () => resolve((server.address() as net.AddressInfo).port)));
  const tcp = net.createServer((socket) => {
    socket.setNoDelay(true);
    socket.on("data", (data) => socket.write(data));
  });
  const raw = http2.createServer((request, response) => {
    request.resume();
    request.on("end", () => {
      response.writeHead(200, { "content-type": "application/proto" });
      response.end();
    });
  });
  const connect = connectNodeAdapter({ routes: (router) => router.service(pb.AgentService, { listCheckpoints: () => ({}) }) });
  const ports: Ports = {
    tcp: await listen(tcp),
    http2: await listen(raw),
    "connect-h2": await listen(http2.createServer(connect)),
    "connect-h1": await listen(http.createServer({ keepAliveTimeout: 60_000 }, connect)),
  };
  process.send?.(ports);
  process.on("disconnect", () => process.exit(0));
}

/** One round trip per call, over one kept-alive connection per protocol. */
async function clients(ports: Ports): Promise<{ call: Record<Protocol, () => Promise<unknown>>; close: () => void }> {
  const socket = net.connect(ports.tcp, "127.0.0.1");
  socket.setNoDelay(true);
  await once(socket, "connect");
  const echo = () =>
    new Promise<void>((resolve) => {
      socket.once("data", () => resolve());
      socket.write("x");
    });
  const session = http2.connect(`http://127.0.0.1:${ports.http2}`);
  const request = () =>
    new Promise<void>((resolve, reject) => {
      const stream = session.request({ ":method": "POST", ":path": "/", "content-type": "application/proto" });
      stream.on("error", reject);
      stream.on("data", () => undefined);
      stream.on("end", resolve);
      stream.end();
    });
  const h2Url = `http://127.0.0.1:${ports["connect-h2"]}`;
  const sessions = new Http2SessionManager(h2Url);
  const overH2 = createClient(pb.AgentService, createConnectTransport({ baseUrl: h2Url, httpVersion: "2", useBinaryFormat: true, sessionManager: sessions }));
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  const overH1 = createClient(
    pb.AgentService,
    createConnectTransport({ baseUrl: `http://127.0.0.1:${ports["connect-h1"]}`, httpVersion: "1.1", useBinaryFormat: true, nodeOptions: { agent } }),
  );
  return {
    call: { tcp: echo, http2: request, "connect-h2": () => overH2.listCheckpoints({}), "connect-h1": () => overH1.listCheckpoints({}) },
    close: () => {
      socket.destroy();
      session.close();
      sessions.abort();
      agent.destroy();
    },
  };
}

async function pass(call: Record<Protocol, () => Promise<unknown>>, rounds: number, gapMs: number): Promise<Record<Protocol, number[]>> {
  const samples: Record<Protocol, number[]> = { tcp: [], http2: [], "connect-h2": [], "connect-h1": [] };
  for (let round = 0; round < rounds; round++) {
    // The protocol going first rotates every round.
    for (let i = 0; i < PROTOCOLS.length; i++) {
      const protocol = PROTOCOLS[(round + i) % PROTOCOLS.length]!;
      if (gapMs > 0) await sleep(gapMs);
      const started = performance.now();
      await call[protocol]();
      samples[protocol].push(performance.now() - started);
    }
  }
  return samples;
}

const summaries = (samples: Record<Protocol, number[]>) =>
  Object.fromEntries(PROTOCOLS.map((protocol) => [protocol, summarize(samples[protocol])])) as Record<Protocol, Summary>;

export async function runTransportBench(options: TransportBenchOptions): Promise<TransportBenchResult> {
  const child: ChildProcess = fork(fileURLToPath(import.meta.url), ["--serve"], { stdio: ["ignore", "inherit", "inherit", "ipc"] });
  try {
    const [ports] = (await once(child, "message")) as [Ports];
    const { call, close } = await clients(ports);
    try {
      options.log(`warm-up: ${options.warmup} round trips per protocol`);
      await pass(call, options.warmup, 0);
      options.log(`back to back: ${options.count} per protocol`);
      const backToBack = summaries(await pass(call, options.count, 0));
      options.log(`with ${options.gapMs} ms before each: ${options.count} per protocol`);
      const withGap = summaries(await pass(call, options.count, options.gapMs));
      return { benchmark: "transport", count: options.count, warmup: options.warmup, gapMs: options.gapMs, backToBack, withGap };
    } finally {
      close();
    }
  } finally {
    child.disconnect();
  }
}

/** The table and, last, the RESULT line: each protocol's p50 with the gap, and its ratio to raw TCP's. */
export function formatTransportBench(result: TransportBenchResult): string[] {
  const label: Record<Protocol, string> = {
    tcp: "raw TCP echo (baseline)",
    http2: "node:http2 request",
    "connect-h2": "Connect over HTTP/2",
    "connect-h1": "Connect over HTTP/1.1",
  };
  const ms = (value: number) => value.toFixed(3).padStart(9);
  const lines = [
    `transport: ${result.count} measured (+${result.warmup} warm-up) round trips per protocol and pass, loopback, two processes`,
    `ms (p50 / p95)                  back to back          with ${result.gapMs} ms before each`,
  ];
  for (const protocol of PROTOCOLS) {
    const near = result.backToBack[protocol];
    const far = result.withGap[protocol];
    lines.push(`${label[protocol].padEnd(28)}${ms(near.p50)} /${ms(near.p95)}    ${ms(far.p50)} /${ms(far.p95)}`);
  }
  const p50 = (protocol: Protocol) => result.withGap[protocol].p50;
  lines.push(
    `RESULT tcp_p50_ms=${p50("tcp").toFixed(3)} http2_p50_ms=${p50("http2").toFixed(3)} connect_h2_p50_ms=${p50("connect-h2").toFixed(3)} ` +
      `connect_h1_p50_ms=${p50("connect-h1").toFixed(3)} connect_h2_vs_tcp=${(p50("connect-h2") / p50("tcp")).toFixed(1)}`,
  );
  return lines;
}

if (process.argv.includes("--serve")) await serve();
