import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readlinkSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import pino from "pino";
import { FakeClock } from "../controller/clock.js";
import { formatProcessIdentity, processStartTime } from "@fast-sandbox/agent/process-identity";
import { LocalAgentProcess, agentErrorOf, type LocalAgentEvents } from "./local-agent-process.js";
import { groupAndSession, until } from "./local-process.fixture.js";

const directory = mkdtempSync(join(tmpdir(), "fsb-local-agent-spec-"));
after(() => rmSync(directory, { recursive: true, force: true }));

type Message = { level: number; msg: string; err?: { code?: string }; log?: string; lastError?: string };

/** The real agent program, pointed at a containerd that is not there: it logs why and exits 1. */
describe("LocalAgentProcess", () => {
  it("runs the agent in a session of its own with its stdin piped, and survives an agent.log that cannot be written", { timeout: 60_000 }, async () => {
    const stateDir = join(directory, "agent-0");
    mkdirSync(stateDir);
    // Every write fails with ENOSPC, as on a full disk.
    symlinkSync("/dev/full", join(stateDir, "agent.log"));
    const messages: { level: number; msg: string; err?: { code?: string } }[] = [];
    const logger = pino({ level: "debug" }, { write: (text: string) => void messages.push(JSON.parse(text) as (typeof messages)[number]) });
    const lost: string[] = [];
    const agent = new LocalAgentProcess(
      {
        name: "spec-0",
        namespace: "default",
        pool: "default",
        stateDir,
        agentToken: "t",
        containerdSocket: join(directory, "no-containerd.sock"),
        containerdNamespace: "fsb-local-agent-spec",
        cgroupParent: "",
        heartbeatIntervalMs: 60_000,
        logger,
        // Restarts wait on a clock that does not move.
        clock: new FakeClock(),
      },
      {
        onReady: () => assert.fail("no containerd: the agent cannot serve"),
        onHeartbeat: () => undefined,
        onLost: (_agent, reason) => lost.push(reason),
      },
    );
    agent.start();
    try {
      const pid = agent.pid ?? assert.fail("the agent was spawned");
      // Ctrl-C and a hangup go to the terminal's foreground process group, within its session.
      assert.notEqual(groupAndSession(pid).session, groupAndSession(process.pid).session, "not in the session of its parent");
      assert.equal(groupAndSession(pid).group, pid, "the leader of its own process group");
      // Node's "pipe" is a socket pair on Linux.
      assert.match(readlinkSync(`/proc/${pid}/fd/0`), /^(pipe|socket):/, "its stdin is a pipe: it exits when its parent is gone");

      await until(() => lost.length > 0 && messages.some((m) => m.msg.startsWith("cannot write the log")), "the agent exited, its log's failure reported");
      assert.deepEqual(lost, ["agent process exited (code 1)"]);
      const failures = messages.filter((m) => m.msg.startsWith("cannot write the log"));
      assert.equal(failures.length, 1, "the log's failure was reported once");
      assert.equal(failures[0]?.err?.code, "ENOSPC");
    } finally {
      await agent.stop();
    }
  });

  /** A LocalAgentProcess of the real agent program whose containerd is not there; `messages`: what the control plane logged. */
  function agentWithoutContainerd(stateDir: string, messages: Message[], events: Partial<LocalAgentEvents> = {}): LocalAgentProcess {
    return new LocalAgentProcess(
      {
        name: "spec-0",
        namespace: "default",
        pool: "default",
        stateDir,
        agentToken: "t",
        containerdSocket: join(directory, "no-containerd.sock"),
        containerdNamespace: "fsb-local-agent-spec",
        cgroupParent: "",
        heartbeatIntervalMs: 60_000,
        logger: pino({ level: "debug" }, { write: (text: string) => void messages.push(JSON.parse(text) as Message) }),
        clock: new FakeClock(),
      },
      { onReady: () => assert.fail("no containerd: the agent cannot serve"), onHeartbeat: () => undefined, onLost: () => undefined, ...events },
    );
  }

  it("names the agent's log and the last error the agent wrote in the warning that it was lost", { timeout: 60_000 }, async () => {
    const stateDir = join(directory, "agent-error");
    const messages: Message[] = [];
    const agent = agentWithoutContainerd(stateDir, messages);
    agent.start();
    try {
      await until(() => messages.some((m) => m.msg === "agent lost; restarting it"), "the agent exited");
      const lost = messages.find((m) => m.msg === "agent lost; restarting it");
      assert.equal(lost?.log, join(stateDir, "agent.log"));
      assert.match(lost?.lastError ?? "", /^agent failed to start: .*is containerd running/);
      assert.ok((lost?.lastError?.length ?? 0) <= 300, "bounded");
    } finally {
      await agent.stop();
    }
  });

  it(
    "passes the agent only this host's settings of the parent's environment, and a SIGTERM while it starts ends it through its own stop",
    { timeout: 60_000 },
    async () => {
      const stateDir = join(directory, "agent-starting");
      mkdirSync(stateDir);
      // The agent waits at its state directory's lock as long as a predecessor runs: this one (sleep) does.
      const predecessor = spawn("sleep", ["60"], { stdio: "ignore" });
      const pid = predecessor.pid ?? assert.fail("sleep runs");
      writeFileSync(join(stateDir, "agent.lock"), `${formatProcessIdentity({ pid, startTime: processStartTime(pid) ?? 0 })}\n`);
      const userEnv = { FSB_TOKEN: "the-user's-token", FSB_URL: "http://elsewhere:7070", FSB_PREPARED_INSTANCES: "3", FSB_NODE_NAME: "elsewhere" };
      const hostEnv = { FSB_NETWORK_DENY: "", FSB_STATS_INTERVAL_MS: "700", FSB_LOG_LEVEL: "debug" };
      const saved = Object.fromEntries(Object.keys({ ...userEnv, ...hostEnv }).map((name) => [name, process.env[name]]));
      const restoreEnv = () => {
        for (const [name, value] of Object.entries(saved)) {
          if (value === undefined) delete process.env[name];
          else process.env[name] = value;
        }
      };
      Object.assign(process.env, userEnv, hostEnv);
      const messages: Message[] = [];
      const agent = agentWithoutContainerd(stateDir, messages);
      try {
        agent.start();
        restoreEnv();
        const agentPid = agent.pid ?? assert.fail("the agent was spawned");
        const environ = new Map(
          readFileSync(`/proc/${agentPid}/environ`, "utf8")
            .split("\0")
            .filter(Boolean)
            .map((entry) => [entry.slice(0, entry.indexOf("=")), entry.slice(entry.indexOf("=") + 1)]),
        );
        for (const name of ["FSB_TOKEN", "FSB_URL", "FSB_PREPARED_INSTANCES", "FSB_NODE_NAME"])
          assert.equal(environ.get(name), undefined, `${name} is not passed`);
        assert.equal(environ.get("FSB_NETWORK_DENY"), "", "a host setting is passed, also empty");
        assert.equal(environ.get("FSB_STATS_INTERVAL_MS"), "700");
        assert.equal(environ.get("PATH"), process.env.PATH);
        assert.equal(environ.get("FSB_AGENT_NAME"), "spec-0", "and what the parent sets");

        const log = join(stateDir, "agent.log");
        const agentLog = () => (existsSync(log) ? readFileSync(log, "utf8") : "");
        await until(() => agentLog().includes("another agent of this name still runs"), "the agent waits for its predecessor");
        await agent.stop();
        assert.match(agentLog(), /"msg":"agent stopping; sandboxes keep running"/, "the agent stopped itself, not killed by the signal's default");
        assert.equal(predecessor.exitCode, null, "nor did it take its predecessor's lock");
        assert.ok(!messages.some((m) => m.msg === "agent lost; restarting it"));
      } finally {
        restoreEnv();
        await agent.stop();
        predecessor.kill("SIGKILL");
      }
    },
  );
});

describe("agentErrorOf", () => {
  it("is the message and error of a JSON line of level error or fatal, a line that is not JSON, bounded", () => {
    assert.equal(agentErrorOf(JSON.stringify({ level: 30, msg: "agent serving" })), undefined);
    assert.equal(
      agentErrorOf(JSON.stringify({ level: 60, msg: "agent failed to start", err: { message: "no containerd" } })),
      "agent failed to start: no containerd",
    );
    assert.equal(agentErrorOf("TypeError: x is not a function"), "TypeError: x is not a function");
    assert.equal(agentErrorOf("    at main (file:///main.js:1:1)"), undefined);
    assert.equal(agentErrorOf(""), undefined);
    assert.equal(agentErrorOf(JSON.stringify({ level: 50, msg: "x".repeat(1000) }))?.length, 300);
  });
});
