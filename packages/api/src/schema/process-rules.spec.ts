import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { ValidationError } from "../errors.js";
import { API_VERSION } from "./object-meta.js";
import { checkProcess, type ProcessFields } from "./process-rules.js";
import { validateSandbox } from "./validation.js";

/** The ValidationError `check` throws. */
function rejection(check: () => void): ValidationError {
  try {
    check();
  } catch (error) {
    assert.ok(error instanceof ValidationError, `expected a ValidationError, got ${String(error)}`);
    return error;
  }
  assert.fail("expected a ValidationError");
}

const long = "x".repeat(128 * 1024);

/** Processes an exec must not start, each wrong in one way a create's spec can be too. */
const BAD_PROCESSES: [string, ProcessFields, string][] = [
  ["a NUL byte in the command", { command: ["sh", "a\0b"] }, "command[1]"],
  ["an env name with '='", { command: ["env"], envs: [{ name: "A=B", value: "c" }] }, "envs[0].name"],
  ["an empty env name", { command: ["env"], envs: [{ name: "", value: "c" }] }, "envs[0].name"],
  ["a NUL byte in an env name", { command: ["env"], envs: [{ name: "A\0", value: "c" }] }, "envs[0].name"],
  ["a NUL byte in an env value", { command: ["env"], envs: [{ name: "A", value: "x\0y" }] }, "envs[0].value"],
  ["a relative working dir", { command: ["pwd"], workingDir: "srv" }, "workingDir"],
  ["a NUL byte in the working dir", { command: ["pwd"], workingDir: "/srv\0x" }, "workingDir"],
  ["a working dir longer than PATH_MAX", { command: ["pwd"], workingDir: `/${"d".repeat(4095)}` }, "workingDir"],
  ["257 command entries", { command: Array(257).fill("x") }, "command"],
  ["257 envs", { command: ["env"], envs: Array.from({ length: 257 }, (_, index) => ({ name: `V${index}`, value: "" })) }, "envs"],
  ["an argument of 128 KiB", { command: ["echo", long] }, "command[1]"],
  ["an env value of 128 KiB", { command: ["env"], envs: [{ name: "A", value: long }] }, "envs[0].value"],
  ["an argument of 128 KiB in bytes", { command: ["echo", "é".repeat(70_000)] }, "command[1]"],
  ["a variable of 128 KiB as NAME=value", { command: ["env"], envs: [{ name: "N".repeat(70_000), value: "v".repeat(70_000) }] }, "envs[0]"],
  [
    "more than 1 MiB in all",
    { command: ["env"], envs: Array.from({ length: 9 }, (_, index) => ({ name: `V${index}`, value: "v".repeat(120 * 1024) })) },
    "envs",
  ],
];

describe("checkProcess", () => {
  it("accepts an exec a create would accept, and takes an empty working dir as unset", () => {
    checkProcess({
      command: ["sh", "-c", "env"],
      envs: [
        { name: "A", value: "1" },
        { name: "EMPTY", value: "" },
        { name: "lower.case-ok", value: "=" },
      ],
    });
    checkProcess({ command: ["pwd"], workingDir: "" });
    checkProcess({ command: ["pwd"], workingDir: "/srv/app" });
    checkProcess({ command: Array(256).fill("x"), envs: [{ name: "BIG", value: "v".repeat(131_067) }] });
  });

  for (const [what, process, field] of BAD_PROCESSES) {
    it(`refuses ${what} on ${field}, in the words a create's validation uses`, () => {
      const exec = rejection(() => checkProcess(process));
      assert.equal(exec.field, field);
      assert.ok(exec.message.startsWith(`${field}: `), exec.message);
      // The same process as a create's spec: refused on the same field (under spec.), with the same words.
      const { workingDir, ...rest } = process;
      const spec = { image: "busybox", poolRef: "p", ...rest, ...(workingDir ? { workingDir } : {}) };
      const create = rejection(() => validateSandbox({ apiVersion: API_VERSION, kind: "Sandbox", metadata: { name: "a" }, spec }));
      assert.equal(create.field, `spec.${field}`);
      assert.equal(create.message, `spec.${exec.message}`);
    });
  }

  it("names the field under a prefix", () => {
    assert.equal(rejection(() => checkProcess({ command: ["a\0"] }, "spec.")).field, "spec.command[0]");
  });
});
