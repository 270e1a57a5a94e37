import assert from "node:assert/strict";
import { afterEach, beforeEach, describe, it } from "node:test";
import { FailedPreconditionError, ValidationError } from "@fast-sandbox/api";
import { Connection } from "./connection.js";
import { CommandExitError } from "./errors.js";
import { FakeControlPlane, FakeDaemon, type FakeProcessIO } from "./sandbox.fixture.js";
import { FastSandbox } from "./sandbox.js";

/** A shell-like program: echoes what is typed, answers "size" with the terminal's size, exits on "exit N". */
async function shell(io: FakeProcessIO): Promise<number> {
  let line = "";
  for await (const chunk of io.input()) {
    for (const char of new TextDecoder().decode(chunk)) {
      io.output(char === "\r" ? "\r\n" : char);
      if (char !== "\r") {
        line += char;
        continue;
      }
      if (line === "size") io.output(`${io.ptySize?.rows} ${io.ptySize?.cols}\r\n`);
      const exit = /^exit (\d+)$/.exec(line);
      if (exit) return Number(exit[1]);
      line = "";
    }
  }
  return 0;
}

describe("sandbox.pty", () => {
  let sandbox: FastSandbox;
  let daemon: FakeDaemon;
  beforeEach(async () => {
    const plane = new FakeControlPlane();
    daemon = new FakeDaemon();
    sandbox = await FastSandbox.create({ connection: new Connection({ transport: plane.transport, daemon: daemon.factory }) });
  });
  afterEach(() => daemon.killAll());

  it("starts bash -i -l in a terminal of the given size, with TERM set; its output arrives as bytes", async () => {
    let seen: Record<string, string> = {};
    daemon.define("/bin/bash -i -l", async (io) => {
      seen = io.envs;
      return shell(io);
    });
    let output = "";
    const terminal = await sandbox.pty.create({ cols: 100, rows: 30, onData: (data) => (output += new TextDecoder().decode(data)) });
    assert.equal(seen.TERM, "xterm-256color");
    await sandbox.pty.sendInput(terminal.pid, "size\r");
    await sandbox.pty.resize(terminal.pid, { cols: 120, rows: 40 });
    await sandbox.pty.sendInput(terminal.pid, "size\r");
    await sandbox.pty.sendInput(terminal.pid, "exit 7\r");
    await assert.rejects(terminal.wait(), (error: unknown) => error instanceof CommandExitError && error.exitCode === 7);
    assert.equal(output, "size\r\n30 100\r\nsize\r\n40 120\r\nexit 7\r\n");
  });

  it("runs the command it is given and resolves wait() when it exits with 0", async () => {
    daemon.define("sh", shell);
    const terminal = await sandbox.pty.create({ cols: 80, rows: 24, command: ["sh"] });
    await sandbox.pty.sendInput(terminal.pid, "exit 0\r");
    assert.equal((await terminal.wait()).exitCode, 0);
  });

  it("kill() ends the terminal; a handle of a terminal has no stdin of its own", async () => {
    daemon.define("sh", shell);
    const terminal = await sandbox.pty.create({ cols: 80, rows: 24, command: ["sh"] });
    await assert.rejects(terminal.sendStdin("x"), FailedPreconditionError);
    assert.equal(await sandbox.pty.kill(terminal.pid), true);
    await assert.rejects(terminal.wait(), (error: unknown) => error instanceof CommandExitError && error.exitCode === -1);
    assert.equal(await sandbox.pty.kill(terminal.pid), false);
  });

  it("refuses sizes a terminal cannot have, before sending anything", async () => {
    daemon.requests.length = 0;
    for (const size of [
      { cols: 0, rows: 24 },
      { cols: 80, rows: 70000 },
      { cols: 80.5, rows: 24 },
    ]) {
      await assert.rejects(sandbox.pty.create({ ...size, command: ["sh"] }), ValidationError);
    }
    await assert.rejects(sandbox.pty.resize(100, { cols: 80, rows: 0 }), (error: unknown) => error instanceof ValidationError && error.field === "rows");
    assert.equal(daemon.requests.length, 0);
  });
});
