import assert from "node:assert/strict";
import { mkdtempSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { ValidationError, type FsbError } from "@fast-sandbox/api";
import {
  COMMAND_START_FILE,
  CommandStartWatcher,
  commandStartError,
  errnoMessage,
  parseCommandStartReport,
  type CommandStartContext,
  type CommandStartReport,
} from "./command-start.js";

const ENOENT = 2;
const EACCES = 13;
const ENOTDIR = 20;
const EAGAIN = 11;
const EROFS = 30;

const directories: string[] = [];
function runDir(): string {
  const directory = mkdtempSync(join(tmpdir(), "fsb-command-start-"));
  directories.push(directory);
  return directory;
}
after(() => {
  for (const directory of directories) rmSync(directory, { recursive: true, force: true });
});

/** Writes the report as the helper does: a temporary file renamed into place. */
function report(directory: string, text: string): void {
  writeFileSync(join(directory, `${COMMAND_START_FILE}.tmp`), text);
  renameSync(join(directory, `${COMMAND_START_FILE}.tmp`), join(directory, COMMAND_START_FILE));
}

describe("parseCommandStartReport", () => {
  it("reads a started command", () => {
    assert.deepEqual(parseCommandStartReport("started\n"), { started: true });
  });

  it("reads the failed step, its errno and the path, which may hold spaces and newlines", () => {
    assert.deepEqual(parseCommandStartReport("failed exec 2\n"), { started: false, step: "exec", errno: 2, path: "" });
    assert.deepEqual(parseCommandStartReport("failed chdir 20\n/srv/my dir\nx"), { started: false, step: "chdir", errno: 20, path: "/srv/my dir\nx" });
    assert.deepEqual(parseCommandStartReport("failed fork 11\n"), { started: false, step: "fork", errno: 11, path: "" });
    assert.deepEqual(parseCommandStartReport("failed mkdir 30\n/work"), { started: false, step: "mkdir", errno: 30, path: "/work" });
  });

  it("refuses anything else", () => {
    for (const text of ["", "started", "failed", "failed exec\n", "failed boot 2\n", "failed exec two\n", "failed exec 2", "STARTED\n"]) {
      assert.equal(parseCommandStartReport(text), undefined, JSON.stringify(text));
    }
  });
});

describe("errnoMessage", () => {
  it("gives the lower-case system message, like Go's", () => {
    assert.equal(errnoMessage(ENOENT), "no such file or directory");
    assert.equal(errnoMessage(EACCES), "permission denied");
    assert.equal(errnoMessage(ENOTDIR), "not a directory");
  });

  it("falls back to the number for an errno it does not know", () => {
    assert.equal(errnoMessage(4242), "errno 4242");
  });
});

describe("commandStartError", () => {
  const fromSpec: CommandStartContext = { args: ["nosuch", "-x"], workingDir: "/srv", commandFromSpec: true, workingDirFromSpec: true };
  const fromImage: CommandStartContext = { args: ["/entrypoint.sh"], workingDir: "/app", commandFromSpec: false, workingDirFromSpec: false };
  const failed = (step: "fork" | "mkdir" | "chdir" | "user" | "exec", errno: number, path = ""): Exclude<CommandStartReport, { started: true }> => ({
    started: false,
    step,
    errno,
    path,
  });

  function assertError(error: FsbError, code: string, message: string, field?: string): void {
    assert.equal(error.code, code);
    assert.equal(error.message, message);
    if (field !== undefined) {
      assert.ok(error instanceof ValidationError);
      assert.equal(error.field, field);
    }
  }

  it("words a name not found in $PATH as docker does, on spec.command", () => {
    assertError(
      commandStartError(failed("exec", ENOENT), fromSpec),
      "invalid_argument",
      'spec.command: exec: "nosuch": executable file not found in $PATH',
      "spec.command",
    );
  });

  it("names the file that could not be executed when it is not the command as given", () => {
    assertError(
      commandStartError(failed("exec", EACCES, "/usr/bin/nosuch"), fromSpec),
      "invalid_argument",
      'spec.command: exec: "nosuch": /usr/bin/nosuch: permission denied',
    );
    assertError(
      commandStartError(failed("exec", EACCES, "/etc/passwd"), { ...fromSpec, args: ["/etc/passwd"] }),
      "invalid_argument",
      'spec.command: exec: "/etc/passwd": permission denied',
    );
    // A file that exists but whose interpreter does not.
    assertError(
      commandStartError(failed("exec", ENOENT, "/usr/bin/nosuch"), fromSpec),
      "invalid_argument",
      'spec.command: exec: "nosuch": /usr/bin/nosuch: no such file or directory',
    );
  });

  it("blames the image when the command came from its entrypoint and cmd", () => {
    assertError(
      commandStartError(failed("exec", ENOENT, "/entrypoint.sh"), fromImage),
      "invalid_argument",
      `exec: "/entrypoint.sh": no such file or directory (the image's entrypoint and cmd)`,
      "",
    );
  });

  it("reports a working directory that cannot be entered or made, on spec.workingDir or the image's WorkingDir", () => {
    assertError(
      commandStartError(failed("chdir", ENOTDIR, "/srv"), fromSpec),
      "invalid_argument",
      "spec.workingDir: chdir /srv: not a directory",
      "spec.workingDir",
    );
    assertError(commandStartError(failed("mkdir", EROFS, "/srv"), fromSpec), "invalid_argument", "spec.workingDir: mkdir /srv: read-only file system");
    assertError(
      commandStartError(failed("chdir", EACCES, "/app"), fromImage),
      "invalid_argument",
      "chdir /app: permission denied (the image's WorkingDir)",
      "",
    );
    assertError(commandStartError(failed("chdir", EACCES), fromSpec), "invalid_argument", "spec.workingDir: chdir /srv: permission denied");
  });

  it("words an image USER the image lacks as docker does, blaming the image", () => {
    assertError(
      commandStartError(failed("user", 2, "ghost"), fromImage),
      "invalid_argument",
      "unable to find user ghost: no matching entries in the image's /etc/passwd or /etc/group (the image's USER)",
    );
    assertError(
      commandStartError(failed("user", 1, "app:staff"), fromImage),
      "invalid_argument",
      "cannot run the command as the image's user app:staff: operation not permitted",
    );
  });

  it("treats a failed fork as the sandbox's condition, not the request's", () => {
    assertError(
      commandStartError(failed("fork", EAGAIN), fromSpec),
      "failed_precondition",
      "the sandbox's helper could not start the command: fork: resource temporarily unavailable (a pids limit must leave room for the helper and the command: at least 2)",
    );
    assertError(
      commandStartError(failed("fork", 12), fromSpec),
      "failed_precondition",
      "the sandbox's helper could not start the command: fork: not enough memory",
    );
  });
});

describe("CommandStartWatcher", () => {
  // The wait's own timeout (10 min) lies far beyond the test's: only the report can end it in time.
  it("resolves with a report written after it started watching, long before the timeout", { timeout: 10_000 }, async () => {
    const directory = runDir();
    const watcher = new CommandStartWatcher(directory);
    try {
      setTimeout(() => report(directory, "failed exec 2\n"), 20);
      assert.deepEqual(await watcher.wait(10 * 60_000), { started: false, step: "exec", errno: 2, path: "" });
    } finally {
      watcher.close();
    }
  });

  it("resolves at once with a report that is already there", async () => {
    const directory = runDir();
    const watcher = new CommandStartWatcher(directory);
    try {
      report(directory, "started\n");
      assert.deepEqual(await watcher.wait(30_000), { started: true });
    } finally {
      watcher.close();
    }
  });

  it("ignores other files and gives undefined when no report comes in time", async () => {
    const directory = runDir();
    const watcher = new CommandStartWatcher(directory);
    try {
      writeFileSync(join(directory, "exit-code"), "0\n");
      writeFileSync(join(directory, COMMAND_START_FILE), "garbage");
      assert.equal(await watcher.wait(100), undefined);
    } finally {
      watcher.close();
    }
  });
});
