/**
 * The embedded composition root over simulated agents (bench/simulated-agent.ts): what its start
 * does with a stored default pool, with a port in use, and what its close() does first.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import pino from "pino";
import { FsbError } from "@fast-sandbox/api";
import { SimulatedAgents } from "../../../bench/simulated-agent.js";
import { DEFAULT_BASE_IMAGE, defaultPool, startEmbeddedControlPlane, type EmbeddedAgents, type EmbeddedControlPlaneOptions } from "./control-plane.js";
import type { AgentProcess } from "./embedded/embedded-agent-fleet.js";
import { openSqliteResourceStore } from "./store/sqlite-resource-store.js";

const directory = mkdtempSync(join(tmpdir(), "fsb-control-plane-spec-"));
after(() => rmSync(directory, { recursive: true, force: true }));

type Message = { msg: string; image?: string; previousImage?: string };

/** Options of a control plane on simulated agents in `dataDir`; `messages`: what it logged. */
function simulated(dataDir: string, messages: Message[], agents = new SimulatedAgents()): EmbeddedControlPlaneOptions {
  return {
    dataDir,
    token: "control-plane-spec-token",
    agents,
    // Nothing may reach containerd.
    containerdSocket: "/nonexistent/fsb-control-plane-spec/containerd.sock",
    cgroupRoot: "",
    recoveryTimeoutMs: 5000,
    logger: pino({ level: "info" }, { write: (text: string) => void messages.push(JSON.parse(text) as Message) }),
  };
}

async function storedImage(dataDir: string): Promise<string | undefined> {
  const store = openSqliteResourceStore({ path: join(dataDir, "state.db") });
  try {
    return (await store.get("SandboxPool", { namespace: "default", name: "default" }))?.spec.image;
  } finally {
    await store.close();
  }
}

describe("startEmbeddedControlPlane", () => {
  it("sets the stored default pool's image to one given, and keeps it when none is (the default image)", { timeout: 60_000 }, async () => {
    const dataDir = join(directory, "image");
    const messages: Message[] = [];
    const first = await startEmbeddedControlPlane({ ...simulated(dataDir, messages), defaultPool: defaultPool(DEFAULT_BASE_IMAGE) });
    assert.equal(first.defaultImage, DEFAULT_BASE_IMAGE);
    await first.close();

    const given = await startEmbeddedControlPlane({ ...simulated(dataDir, messages), defaultPool: defaultPool("docker.io/library/alpine:3.20") });
    assert.equal(given.defaultImage, "docker.io/library/alpine:3.20", "what the banner prints");
    await given.close();
    assert.equal(await storedImage(dataDir), "docker.io/library/alpine:3.20");
    const logged = messages.find((m) => m.msg === "the default pool's image is now the one given");
    assert.deepEqual(
      { image: logged?.image, previousImage: logged?.previousImage },
      { image: "docker.io/library/alpine:3.20", previousImage: DEFAULT_BASE_IMAGE },
    );

    // `fsb up` without --image: the default value, not a choice; the stored pool keeps its image.
    const none = await startEmbeddedControlPlane({ ...simulated(dataDir, messages), defaultPool: defaultPool(DEFAULT_BASE_IMAGE) });
    assert.equal(none.defaultImage, "docker.io/library/alpine:3.20");
    await none.close();
    assert.equal(await storedImage(dataDir), "docker.io/library/alpine:3.20");

    // Said to be given, the default image is set too.
    const back = await startEmbeddedControlPlane({
      ...simulated(dataDir, messages),
      defaultPool: defaultPool(DEFAULT_BASE_IMAGE),
      defaultPoolImageGiven: true,
    });
    assert.equal(back.defaultImage, DEFAULT_BASE_IMAGE);
    await back.close();
  });

  it("fails on a port in use naming the port and its option before any agent starts", { timeout: 60_000 }, async () => {
    const taken: Server = createServer();
    await new Promise<void>((resolve) => taken.listen(0, "127.0.0.1", resolve));
    const port = (taken.address() as { port: number }).port;
    try {
      for (const [option, flag] of [
        [{ port }, "--port"],
        [{ e2b: { port } }, "--e2b-port"],
        [{ proxy: { port } }, "--proxy-port"],
      ] as const) {
        const agents = new SimulatedAgents();
        const created: string[] = [];
        const counting: EmbeddedAgents = {
          connect: (endpoint) => agents.connect(endpoint),
          createProcess: (settings, events) => {
            created.push(settings.name);
            return agents.createProcess(settings, events);
          },
        };
        const dataDir = join(directory, `port${flag}`);
        await assert.rejects(
          startEmbeddedControlPlane({ ...simulated(dataDir, [], agents), agents: counting, defaultPool: defaultPool(DEFAULT_BASE_IMAGE), ...option }),
          (error: unknown) => {
            assert.ok(error instanceof FsbError, String(error));
            assert.equal(error.code, "failed_precondition");
            assert.match(error.message, new RegExp(`port ${port} on 127\\.0\\.0\\.1, .* is in use .*fsb up ${flag}\\)`));
            return true;
          },
        );
        assert.deepEqual(created, [], `no agent was started (${flag})`);
      }
    } finally {
      await new Promise((resolve) => taken.close(resolve));
    }
  });

  it("close() holds the agents' restarts before it stops anything else", { timeout: 60_000 }, async () => {
    const agents = new SimulatedAgents();
    const steps: string[] = [];
    const controlPlane = await startEmbeddedControlPlane({
      ...simulated(join(directory, "close"), []),
      agents: {
        connect: (endpoint) => agents.connect(endpoint),
        createProcess: (settings, events): AgentProcess => {
          const simulatedProcess = agents.createProcess(settings, events);
          return {
            get name() {
              return simulatedProcess.name;
            },
            get pid() {
              return simulatedProcess.pid;
            },
            start: () => simulatedProcess.start(),
            kill: (signal) => simulatedProcess.kill(signal),
            holdRestarts: () => void steps.push(`hold ${settings.name}`),
            stop: async () => {
              steps.push(`stop ${settings.name}`);
              await simulatedProcess.stop();
            },
          };
        },
      },
      defaultPool: defaultPool(DEFAULT_BASE_IMAGE),
    });
    const closing = controlPlane.close();
    // Synchronously, at the start of close().
    assert.deepEqual(steps, ["hold default-0"]);
    await closing;
    assert.deepEqual(steps, ["hold default-0", "stop default-0"]);
  });
});
