import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { execFifoName, isExecFifoName, sandboxIdOfLogFile, sandboxLogFiles, sandboxLogPath, sandboxRunDir } from "./state-layout.js";

describe("the agent's state layout", () => {
  it("places a sandbox's log, run directory and exec FIFOs under the state directory", () => {
    assert.equal(sandboxLogPath("/data/agents/default-0", "default.web.a1b2c3"), "/data/agents/default-0/logs/default.web.a1b2c3.log");
    assert.equal(sandboxRunDir("/data/agents/default-0", "default.web.a1b2c3"), "/data/agents/default-0/run/default.web.a1b2c3");
    assert.equal(execFifoName("default.web.a1b2c3", "exec-0a1b2c"), "default.web.a1b2c3.exec-0a1b2c");
  });

  it("recognises exec FIFO names, of one sandbox when asked", () => {
    assert.ok(isExecFifoName("default.web.a1b2c3.exec-0a1b2c.stdout"));
    assert.ok(isExecFifoName("default.web.a1b2c3.exec-0a1b2c.stderr", "default.web.a1b2c3"));
    assert.ok(!isExecFifoName("default.web.a1b2c3.exec-0a1b2c.stderr", "default.web"));
    assert.ok(!isExecFifoName("agent.log"));
    assert.ok(!isExecFifoName("fsb-runsc"));
    assert.ok(!isExecFifoName("x.exec-zz.stdout"));
  });

  it("names a log's rotated part and a rotation's copy beside it, and tells whose a log file is", () => {
    assert.deepEqual(sandboxLogFiles("/s/logs/default.web.a1b2c3.log"), [
      "/s/logs/default.web.a1b2c3.log",
      "/s/logs/default.web.a1b2c3.log.1",
      "/s/logs/default.web.a1b2c3.log.1.tmp",
    ]);
    assert.equal(sandboxIdOfLogFile("default.web.a1b2c3.log"), "default.web.a1b2c3");
    assert.equal(sandboxIdOfLogFile("default.web.a1b2c3.log.1"), "default.web.a1b2c3");
    assert.equal(sandboxIdOfLogFile("default.web.a1b2c3.log.1.tmp"), "default.web.a1b2c3");
    assert.equal(sandboxIdOfLogFile("default.web.a1b2c3.log.2"), undefined);
    assert.equal(sandboxIdOfLogFile("notes.txt"), undefined);
    assert.equal(sandboxIdOfLogFile(".log"), undefined);
  });
});
