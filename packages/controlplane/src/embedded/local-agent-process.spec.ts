import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, readlinkSync, rmSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import pino from "pino";
import { FakeClock } from "../controller/clock.js";
import { LocalAgentProcess } from "./local-agent-process.js";
import { groupAndSession, until } from "./local-process.fixture.js";

const directory = mkdtempSync(join(tmpdir(), "fsb-local-agent-spec-"));
after(() => rmSync(directory, { recursive: true, force: true }));

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
});
