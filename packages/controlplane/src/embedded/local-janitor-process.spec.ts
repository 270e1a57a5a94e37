import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, readlinkSync, rmSync } from "node:fs";
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

  it("passes the janitor its inventory from the parent and only this host's settings of the parent's environment", { timeout: 60_000 }, async () => {
    const userEnv = { FSB_JANITOR_INVENTORY: "kubernetes", KUBECONFIG: "/elsewhere/kubeconfig", FSB_NODE_NAME: "elsewhere", FSB_TOKEN: "the-user's-token" };
    const hostEnv = { FSB_NETWORK_STATE_DIR: join(directory, "network") };
    const saved = Object.fromEntries(Object.keys({ ...userEnv, ...hostEnv }).map((name) => [name, process.env[name]]));
    Object.assign(process.env, userEnv, hostEnv);
    const janitor = new LocalJanitorProcess({
      url: "http://127.0.0.1:1",
      token: "t",
      containerdSocket: join(directory, "no-containerd.sock"),
      containerdNamespace: "fsb-local-janitor-spec",
      agentsDir: join(directory, "agents"),
      checkpointDir: join(directory, "checkpoints"),
      cgroupRoot: "",
      intervalMs: 60_000,
      logPath: join(directory, "janitor.log"),
      logger: pino({ level: "silent" }),
      clock: new FakeClock(),
    });
    try {
      janitor.start();
      const pid = janitor.pid ?? assert.fail("the janitor was spawned");
      const environ = new Map(
        readFileSync(`/proc/${pid}/environ`, "utf8")
          .split("\0")
          .filter(Boolean)
          .map((entry) => [entry.slice(0, entry.indexOf("=")), entry.slice(entry.indexOf("=") + 1)]),
      );
      for (const name of ["FSB_JANITOR_INVENTORY", "KUBECONFIG", "FSB_NODE_NAME"]) assert.equal(environ.get(name), undefined, `${name} is not passed`);
      assert.equal(environ.get("FSB_TOKEN"), "t", "the control plane's token, not the user's");
      assert.equal(environ.get("FSB_NETWORK_STATE_DIR"), hostEnv.FSB_NETWORK_STATE_DIR);
      assert.equal(environ.get("PATH"), process.env.PATH);
    } finally {
      for (const [name, value] of Object.entries(saved)) {
        if (value === undefined) delete process.env[name];
        else process.env[name] = value;
      }
      await janitor.stop();
    }
  });
});
