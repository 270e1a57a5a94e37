import assert from "node:assert/strict";
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, beforeEach, describe, it } from "node:test";
import { CniError } from "./cni-error.js";
import { CniInvoker, type CniNetworkList } from "./cni-invoker.js";

/**
 * A fake plugin (Node.js script) that logs every call — command, CNI_* variables and its stdin
 * configuration — to `$FAKE_CNI_LOG`-style file named in its config, and behaves as its config says:
 * `fail: { command, code, msg, details }` prints an error result, `crash: { command }` exits 2 with
 * a line on stderr, `garbage: true` prints no JSON, otherwise ADD appends an interface named after
 * the plugin to prevResult (or starts a result) and prints it.
 */
const FAKE_PLUGIN = `#!${process.execPath}
const { appendFileSync } = require("node:fs");
let input = "";
process.stdin.on("data", (chunk) => (input += chunk));
process.stdin.on("end", () => {
  const config = JSON.parse(input);
  const command = process.env.CNI_COMMAND;
  const env = Object.fromEntries(Object.entries(process.env).filter(([key]) => key.startsWith("CNI_")));
  appendFileSync(config.log, JSON.stringify({ plugin: config.type, command, env, config }) + "\\n");
  if (config.fail && config.fail.command === command) {
    process.stdout.write(JSON.stringify({ cniVersion: config.cniVersion, code: config.fail.code, msg: config.fail.msg, details: config.fail.details }));
    process.exit(1);
  }
  if (config.crash && config.crash.command === command) {
    process.stderr.write("panic: something broke\\n");
    process.exit(2);
  }
  if (command === "ADD") {
    if (config.garbage) { process.stdout.write("not json"); return; }
    const result = config.prevResult ?? { cniVersion: config.cniVersion, interfaces: [], ips: [] };
    result.interfaces.push({ name: config.type });
    if (result.ips.length === 0) result.ips.push({ interface: 0, address: "10.1.0.2/24", gateway: "10.1.0.1" });
    process.stdout.write(JSON.stringify(result));
  }
});
`;

interface LoggedCall {
  plugin: string;
  command: string;
  env: Record<string, string>;
  config: Record<string, unknown> & { prevResult?: { interfaces: { name: string }[] } };
}

const dir = mkdtempSync(join(tmpdir(), "fsb-cni-invoker-"));
const pluginDir = join(dir, "plugins");
const emptyDir = join(dir, "empty");
const logPath = join(dir, "calls.jsonl");
after(() => rmSync(dir, { recursive: true, force: true }));

mkdirSync(pluginDir);
mkdirSync(emptyDir);
for (const name of ["first", "second", "third"]) {
  writeFileSync(join(pluginDir, name), FAKE_PLUGIN);
  chmodSync(join(pluginDir, name), 0o755);
}

function calls(): LoggedCall[] {
  try {
    return readFileSync(logPath, "utf8")
      .split("\n")
      .filter(Boolean)
      .map((line) => JSON.parse(line) as LoggedCall);
  } catch {
    return [];
  }
}

function list(...plugins: Record<string, unknown>[]): CniNetworkList {
  return { cniVersion: "1.0.0", name: "testnet", plugins: plugins.map((plugin) => ({ log: logPath, ...plugin, type: String(plugin.type) })) };
}

const attachment = { containerId: "c-1", netnsPath: "/run/netns/test-1", ifName: "eth0", args: { K8S_POD_NAME: "p", IgnoreUnknown: "1" } };

describe("CniInvoker", () => {
  // The empty directory comes first: plugins are looked up along CNI_PATH in order.
  const invoker = new CniInvoker({ pluginDirs: [emptyDir, pluginDir] });

  beforeEach(() => rmSync(logPath, { force: true }));

  it("ADD runs the plugins in order, each with the CNI_* variables, the list's name and version, and the previous result", async () => {
    const seen: number[] = [];
    const result = await invoker.add(list({ type: "first", mtu: 1400 }, { type: "second" }), attachment, (each) => seen.push(each.interfaces?.length ?? 0));
    // Each plugin's result was handed out as it came.
    assert.deepEqual(seen, [1, 2]);
    assert.deepEqual(
      result.interfaces?.map((item) => item.name),
      ["first", "second"],
    );
    const [first, second] = calls();
    assert.deepEqual([first?.plugin, second?.plugin], ["first", "second"]);
    assert.deepEqual(first?.env, {
      CNI_COMMAND: "ADD",
      CNI_CONTAINERID: "c-1",
      CNI_NETNS: "/run/netns/test-1",
      CNI_IFNAME: "eth0",
      CNI_PATH: `${emptyDir}:${pluginDir}`,
      CNI_ARGS: "K8S_POD_NAME=p;IgnoreUnknown=1",
    });
    assert.equal(first?.config.name, "testnet");
    assert.equal(first?.config.cniVersion, "1.0.0");
    assert.equal(first?.config.mtu, 1400);
    assert.equal(first?.config.prevResult, undefined);
    assert.deepEqual(
      second?.config.prevResult?.interfaces.map((item) => item.name),
      ["first"],
    );
  });

  it("DEL runs the plugins in reverse order with the ADD's result", async () => {
    const prevResult = { cniVersion: "1.0.0", interfaces: [{ name: "first" }, { name: "second" }], ips: [] };
    await invoker.del(list({ type: "first" }, { type: "second" }, { type: "third" }), attachment, prevResult);
    assert.deepEqual(
      calls().map((call) => `${call.command} ${call.plugin}`),
      ["DEL third", "DEL second", "DEL first"],
    );
    assert.ok(calls().every((call) => call.env.CNI_COMMAND === "DEL" && call.config.prevResult !== undefined));
  });

  it("DEL goes on through the list when a plugin fails, then throws the first failure", async () => {
    await assert.rejects(
      invoker.del(list({ type: "first", fail: { command: "DEL", code: 11, msg: "busy" } }, { type: "second", crash: { command: "DEL" } }), attachment),
      (error: unknown) => error instanceof CniError && error.plugin === "second" && error.code === "internal" && /panic: something broke/.test(error.message),
    );
    assert.deepEqual(
      calls().map((call) => `${call.command} ${call.plugin}`),
      ["DEL second", "DEL first"],
    );
  });

  it("a failing ADD is undone with a DEL of the whole list, and its error result becomes a CniError", async () => {
    await assert.rejects(
      invoker.add(
        list({ type: "first" }, { type: "second", fail: { command: "ADD", code: 7, msg: "bad bridge", details: "name too long" } }, { type: "third" }),
        attachment,
      ),
      (error: unknown) => {
        assert.ok(error instanceof CniError);
        assert.equal(error.code, "failed_precondition");
        assert.equal(error.cniCode, 7);
        assert.equal(error.plugin, "second");
        assert.equal(error.command, "ADD");
        assert.match(error.message, /CNI plugin "second" failed ADD \(code 7, invalid network config\): bad bridge: name too long/);
        return true;
      },
    );
    const log = calls();
    assert.deepEqual(
      log.map((call) => `${call.command} ${call.plugin}`),
      ["ADD first", "ADD second", "DEL third", "DEL second", "DEL first"],
    );
    // The clean-up passes the last successful result on.
    assert.deepEqual(
      log[2]?.config.prevResult?.interfaces.map((item) => item.name),
      ["first"],
    );
  });

  it("CHECK runs the plugins in order with the ADD's result", async () => {
    const prevResult = { cniVersion: "1.0.0", interfaces: [{ name: "first" }], ips: [] };
    await invoker.check(list({ type: "first" }, { type: "second" }), attachment, prevResult);
    assert.deepEqual(
      calls().map((call) => `${call.command} ${call.plugin}`),
      ["CHECK first", "CHECK second"],
    );
    await assert.rejects(
      invoker.check(list({ type: "first", fail: { command: "CHECK", code: 3, msg: "no such container" } }), attachment, prevResult),
      (error: unknown) => error instanceof CniError && error.code === "not_found",
    );
  });

  it("a plugin that is not installed is a failed precondition naming the package and FSB_CNI_PATH", async () => {
    await assert.rejects(
      invoker.add(list({ type: "missing" }), attachment),
      (error: unknown) =>
        error instanceof CniError &&
        error.code === "failed_precondition" &&
        /containernetworking-plugins/.test(error.message) &&
        /FSB_CNI_PATH/.test(error.message),
    );
    assert.throws(
      () => invoker.findPlugin("../first", "ADD"),
      (error: unknown) => error instanceof CniError && error.code === "failed_precondition",
    );
  });

  it("an ADD that prints no JSON result is an internal error, and the list is deleted again", async () => {
    await assert.rejects(
      invoker.add(list({ type: "first", garbage: true }), attachment),
      (error: unknown) => error instanceof CniError && error.code === "internal" && /no JSON result/.test(error.message),
    );
    assert.deepEqual(
      calls().map((call) => `${call.command} ${call.plugin}`),
      ["ADD first", "DEL first"],
    );
  });
});
