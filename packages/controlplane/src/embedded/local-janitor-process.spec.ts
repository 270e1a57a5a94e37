import assert from "node:assert/strict";
import { mkdtempSync, readlinkSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import pino from "pino";
import { FakeClock } from "../controller/clock.js";
import { LocalJanitorProcess } from "./local-janitor-process.js";
import { groupAndSession, until } from "./local-process.fixture.js";

const directory = mkdtempSync(join(tmpdir(), "fsb-local-janitor-spec-"));
after(() => rmSync(directory, { recursive: true, force: true }));

/** The real janitor program, pointed at a control plane and a containerd that are not there. */
describe("LocalJanitorProcess", () => {
  it("runs the janitor in a session of its own with its stdin piped, and survives a janitor.log that cannot be written", { timeout: 60_000 }, async () => {
    const messages: { level: number; msg: string; err?: { code?: string } }[] = [];
    const logger = pino({ level: "debug" }, { write: (text: string) => void messages.push(JSON.parse(text) as (typeof messages)[number]) });
    const janitor = new LocalJanitorProcess({
      url: "http://127.0.0.1:1",
      token: "t",
      containerdSocket: join(directory, "no-containerd.sock"),
      containerdNamespace: "fsb-local-janitor-spec",
      agentsDir: join(directory, "agents"),
      checkpointDir: join(directory, "checkpoints"),
      cgroupRoot: "",
      intervalMs: 60_000,
      // Every write fails with ENOSPC, as on a full disk.
      logPath: "/dev/full",
      logger,
      clock: new FakeClock(),
    });
    janitor.start();
    try {
      const pid = janitor.pid ?? assert.fail("the janitor was spawned");
      // Ctrl-C and a hangup go to the terminal's foreground process group, within its session.
      assert.notEqual(groupAndSession(pid).session, groupAndSession(process.pid).session, "not in the session of its parent");
      assert.equal(groupAndSession(pid).group, pid, "the leader of its own process group");
      // Node's "pipe" is a socket pair on Linux.
      assert.match(readlinkSync(`/proc/${pid}/fd/0`), /^(pipe|socket):/, "its stdin is a pipe: it exits when its parent is gone");

      // The janitor logs "janitor started" on its stderr at once; its log cannot take it.
      await until(() => messages.some((m) => m.msg.startsWith("cannot write the log")), "the log's failure was reported");
      const failures = messages.filter((m) => m.msg.startsWith("cannot write the log"));
      assert.equal(failures.length, 1);
      assert.equal(failures[0]?.err?.code, "ENOSPC");
      assert.equal(janitor.pid, pid, "the janitor runs on");
    } finally {
      await janitor.stop();
    }
    assert.equal(janitor.pid, undefined);
  });
});
