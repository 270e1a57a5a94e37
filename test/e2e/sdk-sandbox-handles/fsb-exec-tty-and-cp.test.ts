/**
 * The CLI on the SDK's handles, through the real `fsb` program against an embedded Fast Sandbox on
 * the real containerd: `fsb exec -it` and `fsb shell` in a real pseudo-terminal (pty-driver.py) —
 * what is typed is echoed by the sandbox's terminal, a window resize reaches `stty size`, the exit
 * code comes back — `fsb exec -i` with piped stdin, `fsb exec` without them as before, and
 * `fsb cp` into and out of a sandbox (files with their modes, directory trees, directories as
 * destinations, stdin/stdout, errors).
 */
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { Connection, FastSandbox } from "@fast-sandbox/sdk";
import { REPO_ROOT } from "../../support/containerd.js";
import { pool, startEmbedded, waitFor, type EmbeddedCase } from "../../support/embedded.js";

const FSB = join(REPO_ROOT, "packages/cli/bin/fsb.js");
const PTY_DRIVER = join(import.meta.dirname, "pty-driver.py");

/** `fsb` in a pseudo-terminal of 24x80 (40x120 after `resize()`): type into it, read what it shows, get its exit code. */
class TerminalRun {
  output = "";
  readonly exited: Promise<number | null>;
  private readonly child;

  constructor(args: string[], env: NodeJS.ProcessEnv) {
    this.child = spawn("python3", [PTY_DRIVER, "24", "80", "40", "120", "--", process.execPath, FSB, ...args], { env, stdio: ["pipe", "pipe", "inherit"] });
    this.child.stdout.on("data", (chunk: Buffer) => (this.output += chunk.toString()));
    this.exited = new Promise((resolve) => this.child.on("exit", (code) => resolve(code)));
  }

  type(text: string): void {
    this.child.stdin.write(text);
  }

  /** Types `text` (again every second) until `expected` shows in what the terminal shows from now on. */
  async typeUntil(text: string, expected: RegExp, what: string): Promise<void> {
    const from = this.output.length;
    let next = 0;
    const check = () => {
      if (expected.test(this.output.slice(from))) return true;
      if (Date.now() >= next) {
        this.type(text);
        next = Date.now() + 1_000;
      }
      return false;
    };
    await waitFor(check, 15_000, what).catch((error: unknown) => {
      throw new Error(`${String(error)}; the terminal showed: ${JSON.stringify(this.output.slice(-400))}`);
    });
  }

  resize(): void {
    this.child.kill("SIGUSR1");
  }

  kill(): void {
    this.child.kill("SIGKILL");
  }
}

describe("fsb exec -it, fsb shell and fsb cp on a real sandbox", () => {
  let embedded: EmbeddedCase;
  let connection: Connection;
  let sandbox: FastSandbox;
  let env: NodeJS.ProcessEnv;
  const local = mkdtempSync(join(tmpdir(), "fsb-e2e-cp-"));

  /** Runs `fsb` to completion, stdin from `input` (asynchronously: the control plane answering it runs in this process). */
  function fsb(args: string[], input?: Buffer | string): Promise<{ status: number | null; stdout: Buffer; stderr: string }> {
    return new Promise((resolve, reject) => {
      const child = spawn(process.execPath, [FSB, ...args], { env, stdio: ["pipe", "pipe", "pipe"], timeout: 60_000 });
      const stdout: Buffer[] = [];
      let stderr = "";
      child.stdout.on("data", (chunk: Buffer) => stdout.push(chunk));
      child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
      child.on("error", reject);
      child.on("close", (status) => resolve({ status, stdout: Buffer.concat(stdout), stderr }));
      child.stdin.end(input ?? "");
    });
  }

  before(async () => {
    embedded = await startEmbedded({ name: "cli-tty", pools: [pool("default", { maxSandboxesPerPod: 2 })] });
    connection = new Connection({ url: embedded.controlPlane.url, token: embedded.token });
    sandbox = await FastSandbox.create({ connection, command: ["sleep", "3600"] });
    assert.equal(await sandbox.isRunning(), true, "create() waited for the daemon");
    // The CLI finds the control plane by --url and FSB_TOKEN; the sandbox's token comes with --token.
    env = { ...process.env, FSB_TOKEN: embedded.token, FSB_DATA_DIR: embedded.dataDir };
    delete env.FSB_URL;
    delete env.FSB_ACCESS_TOKEN;
  });

  after(async () => {
    rmSync(local, { recursive: true, force: true });
    connection?.close();
    await embedded?.stop();
  });

  const target = () => ["--url", embedded.controlPlane.url];

  it("exec -it: echoes what is typed, reports the window size and its changes, and exits with the shell's code", async () => {
    const run = new TerminalRun([...target(), "exec", "-it", sandbox.name, "--token", sandbox.accessToken, "--", "sh"], env);
    try {
      // Once the shell answers, this end's terminal is in raw mode: what shows of the typed line is the sandbox's echo.
      await run.typeUntil("echo ready\r", /\nready\r*\n/, "the shell");
      // Not anchored: the previous command's prompt (and the shell's cursor query) may still arrive after it.
      await run.typeUntil("echo hel''lo\r", /echo hel''lo\r*\n(?:.*\n)*?hello\r*\n/, "the echo of the typed line and its output");
      await run.typeUntil("stty size\r", /24 80\r*\n/, "the first window size");
      run.resize();
      await run.typeUntil("stty size\r", /40 120\r*\n/, "the window size after SIGWINCH");
      run.type("exit 7\r");
      assert.equal(await run.exited, 7);
    } finally {
      run.kill();
    }
  });

  it("exec -it: Ctrl-C goes to the sandbox (raw mode), not to fsb", async () => {
    const run = new TerminalRun([...target(), "exec", "-it", sandbox.name, "--token", sandbox.accessToken, "--", "sh"], env);
    try {
      await run.typeUntil("echo ready\r", /\nready\r*\n/, "the shell");
      // ^C once the sleep runs (the shell says so just before it starts it): one sooner may not reach it.
      const from = run.output.length;
      run.type("echo sleeping; sleep 30\r");
      await waitFor(() => /\nsleeping\r*\n/.test(run.output.slice(from)), 15_000, "the sleep to start");
      run.type("\x03");
      // The interrupted sleep gives the prompt back: the session lives on.
      await run.typeUntil("echo after-interrupt\r", /\nafter-interrupt\r*\n/, "the shell after Ctrl-C");
      run.type("exit\r");
      assert.equal(await run.exited, 0);
    } finally {
      run.kill();
    }
  });

  it("shell: an interactive login shell, exiting 0", async () => {
    const run = new TerminalRun([...target(), "shell", sandbox.name, "--token", sandbox.accessToken], env);
    try {
      await run.typeUntil("echo in-$((6*7))\r", /in-42\r*\n/, "the shell's answer");
      run.type("exit\r");
      assert.equal(await run.exited, 0);
    } finally {
      run.kill();
    }
  });

  it("exec -i pipes stdin to the command; exec without -i/-t works as before", async () => {
    const piped = await fsb([...target(), "exec", "-i", sandbox.name, "--token", sandbox.accessToken, "--", "sh", "-c", "tr a-z A-Z; exit 3"], "piped input\n");
    assert.equal(piped.stdout.toString(), "PIPED INPUT\n");
    assert.equal(piped.status, 3, piped.stderr);
    const plain = await fsb([...target(), "exec", sandbox.name, "--", "sh", "-c", "echo out; echo err >&2; exit 4"]);
    assert.equal(plain.stdout.toString(), "out\n");
    assert.equal(plain.stderr, "err\n");
    assert.equal(plain.status, 4);
  });

  it("exec -u runs as the given user, through the control plane (a group too) and through the daemon (-i)", async () => {
    const ids = ["--", "sh", "-c", "id -u; id -g"];
    const plain = await fsb([...target(), "exec", sandbox.name, "-u", "1234:99", ...ids]);
    assert.equal(plain.stdout.toString(), "1234\n99\n", plain.stderr);
    const root = await fsb([...target(), "exec", sandbox.name, "-u", "root", ...ids]);
    assert.equal(root.stdout.toString(), "0\n0\n", root.stderr);
    const viaDaemon = await fsb([...target(), "exec", "-i", sandbox.name, "-u", "nobody", "-w", "/tmp", "--token", sandbox.accessToken, ...ids], "");
    assert.equal(viaDaemon.stdout.toString(), "65534\n65534\n", viaDaemon.stderr);
  });

  it("exec -it without a token says how to get one", async () => {
    const result = await fsb([...target(), "exec", "-it", sandbox.name, "--", "sh"]);
    assert.equal(result.status, 2);
    assert.match(result.stderr, /no access token for sandbox default\/.+: pass --token \(or FSB_ACCESS_TOKEN\), or run 'fsb token/);
  });

  it("cp copies a file into the sandbox and back out, byte for byte, also into directories and through - ", async () => {
    const bytes = randomBytes(2 * 1024 * 1024 + 3);
    writeFileSync(join(local, "blob.bin"), bytes);
    const token = ["--token", sandbox.accessToken];
    const up = await fsb([...target(), "cp", join(local, "blob.bin"), `${sandbox.name}:/tmp/cp/blob.bin`, ...token]);
    assert.equal(up.status, 0, up.stderr);
    assert.ok(Buffer.from(await sandbox.files.read("/tmp/cp/blob.bin", { format: "bytes" })).equals(bytes));

    // Into an existing directory: the file keeps its name.
    assert.equal((await fsb([...target(), "cp", join(local, "blob.bin"), `${sandbox.name}:/tmp/cp`, ...token])).status, 0);
    assert.equal((await sandbox.commands.run("ls /tmp/cp")).stdout, "blob.bin\n");

    const down = await fsb([...target(), "cp", `${sandbox.name}:/tmp/cp/blob.bin`, join(local, "back.bin"), ...token]);
    assert.equal(down.status, 0, down.stderr);
    assert.ok(readFileSync(join(local, "back.bin")).equals(bytes));
    assert.equal((await fsb([...target(), "cp", `${sandbox.name}:/tmp/cp/blob.bin`, `${local}/`, ...token])).status, 0);
    assert.ok(readFileSync(join(local, "blob.bin")).equals(bytes));

    const fromStdin = await fsb([...target(), "cp", "-", `${sandbox.name}:/tmp/cp/stdin.txt`, ...token], "from stdin\n");
    assert.equal(fromStdin.status, 0, fromStdin.stderr);
    const toStdout = await fsb([...target(), "cp", `${sandbox.name}:/tmp/cp/stdin.txt`, "-", ...token]);
    assert.equal(toStdout.stdout.toString(), "from stdin\n");
  });

  it("cp keeps a file's permission bits both ways: a script copied in runs", async () => {
    const token = ["--token", sandbox.accessToken];
    writeFileSync(join(local, "hello.sh"), "#!/bin/sh\necho hello from the script\n");
    chmodSync(join(local, "hello.sh"), 0o750);
    const up = await fsb([...target(), "cp", join(local, "hello.sh"), `${sandbox.name}:/tmp/modes/hello.sh`, ...token]);
    assert.equal(up.status, 0, up.stderr);
    assert.equal((await sandbox.commands.run("stat -c %a /tmp/modes/hello.sh")).stdout, "750\n");
    assert.equal((await sandbox.commands.run("/tmp/modes/hello.sh")).stdout, "hello from the script\n");
    // Onto an existing file: its mode becomes the source's too.
    chmodSync(join(local, "hello.sh"), 0o700);
    assert.equal((await fsb([...target(), "cp", join(local, "hello.sh"), `${sandbox.name}:/tmp/modes/hello.sh`, ...token])).status, 0);
    assert.equal((await sandbox.commands.run("stat -c %a /tmp/modes/hello.sh")).stdout, "700\n");

    await sandbox.commands.run("printf 'x' > /tmp/modes/private && chmod 600 /tmp/modes/private && chmod 755 /tmp/modes/hello.sh");
    for (const [remote, mode] of [
      ["private", 0o600],
      ["hello.sh", 0o755],
    ] as const) {
      const down = await fsb([...target(), "cp", `${sandbox.name}:/tmp/modes/${remote}`, join(local, `down-${remote}`), ...token]);
      assert.equal(down.status, 0, down.stderr);
      assert.equal(statSync(join(local, `down-${remote}`)).mode & 0o777, mode & ~process.umask(), remote);
    }
  });

  it("cp copies a directory tree in and out: files with their modes, subdirectories; skips symlinks and special files, saying so", async () => {
    const token = ["--token", sandbox.accessToken];
    const tree = join(local, "proj");
    mkdirSync(join(tree, "src", "deep"), { recursive: true });
    mkdirSync(join(tree, "empty"));
    writeFileSync(join(tree, "run.sh"), "#!/bin/sh\necho ran\n", { mode: 0o755 });
    writeFileSync(join(tree, "src", "main.py"), "print('hi')\n", { mode: 0o640 });
    const blob = randomBytes(300 * 1024 + 7);
    writeFileSync(join(tree, "src", "deep", "blob.bin"), blob);
    symlinkSync("run.sh", join(tree, "also-run.sh"));
    symlinkSync(".", join(tree, "loop"));
    execFileSync("mkfifo", [join(tree, "fifo")]);

    // To a path that is not there: the tree is made there.
    const up = await fsb([...target(), "cp", tree, `${sandbox.name}:/tmp/tree`, ...token]);
    assert.equal(up.status, 0, up.stderr);
    // A symlink could take a file from anywhere on this machine into the sandbox: left out.
    assert.match(up.stderr, /fsb cp: skipped .*proj\/loop: a symlink is not copied/);
    assert.match(up.stderr, /fsb cp: skipped .*proj\/also-run.sh: a symlink is not copied/);
    assert.match(up.stderr, /fsb cp: skipped .*proj\/fifo: not a regular file or a directory/);
    const listing = await sandbox.commands.run("cd /tmp/tree && find . | sort && stat -c '%a %n' run.sh src/main.py && ./run.sh");
    assert.equal(
      listing.stdout,
      [".", "./empty", "./run.sh", "./src", "./src/deep", "./src/deep/blob.bin", "./src/main.py", "755 run.sh", "640 src/main.py", "ran", ""].join("\n"),
    );
    assert.ok(Buffer.from(await sandbox.files.read("/tmp/tree/src/deep/blob.bin", { format: "bytes" })).equals(blob));
    // Into an existing directory: under its own name.
    assert.equal((await fsb([...target(), "cp", tree, `${sandbox.name}:/tmp/tree/`, ...token])).status, 0);
    assert.equal((await sandbox.commands.run("test -x /tmp/tree/proj/run.sh && cat /tmp/tree/proj/src/main.py")).stdout, "print('hi')\n");

    // Out: a symlink in the sandbox is left out (it could point anywhere on this machine), said on stderr.
    await sandbox.commands.run("ln -s /etc/passwd /tmp/tree/src/passwd-link && mkfifo /tmp/tree/src/pipe");
    const down = await fsb([...target(), "cp", `${sandbox.name}:/tmp/tree`, join(local, "back"), ...token]);
    assert.equal(down.status, 0, down.stderr);
    assert.match(down.stderr, /fsb cp: skipped "\/tmp\/tree\/src\/passwd-link": a symlink \(to "\/etc\/passwd"\) is not copied/);
    assert.match(down.stderr, /fsb cp: skipped "\/tmp\/tree\/src\/pipe": not a regular file \(prw-r--r--\)/);
    const back = join(local, "back");
    assert.deepEqual(readdirSync(back).sort(), ["empty", "proj", "run.sh", "src"]);
    assert.deepEqual(readdirSync(join(back, "src")).sort(), ["deep", "main.py"]);
    assert.ok(readFileSync(join(back, "src", "deep", "blob.bin")).equals(blob));
    assert.equal(statSync(join(back, "run.sh")).mode & 0o777, 0o755 & ~process.umask());
    assert.equal(statSync(join(back, "src", "main.py")).mode & 0o777, 0o640 & ~process.umask());
    // Again, into the directory now there: merged under its own name, no partial file left.
    const again = await fsb([...target(), "cp", `${sandbox.name}:/tmp/tree/src`, `${back}/`, ...token]);
    assert.equal(again.status, 0, again.stderr);
    assert.deepEqual(readdirSync(join(back, "src")).sort(), ["deep", "main.py"]);
    assert.equal(readFileSync(join(back, "src", "main.py"), "utf8"), "print('hi')\n");
  });

  it("cp fails clearly for a missing file, a directory source and a missing local directory, leaving nothing behind", async () => {
    const token = ["--token", sandbox.accessToken];
    const missing = await fsb([...target(), "cp", `${sandbox.name}:/no/such/file`, join(local, "x"), ...token]);
    assert.equal(missing.status, 1);
    assert.match(missing.stderr, /error: reading \/no\/such\/file in sandbox .+: .*no such file or directory/);
    const directory = await fsb([...target(), "cp", `${sandbox.name}:/tmp`, "-", ...token]);
    assert.equal(directory.status, 2);
    assert.match(directory.stderr, /\/tmp in sandbox .+ is a directory; give a local directory to copy it into/);
    await sandbox.files.write("/tmp/exists.txt", "x");
    const noParent = await fsb([...target(), "cp", `${sandbox.name}:/tmp/exists.txt`, join(local, "no", "dir", "x"), ...token]);
    assert.equal(noParent.status, 2, "a local destination that cannot be: bad usage, refused before the download");
    assert.match(noParent.stderr, /is not a directory on this machine/);
    assert.deepEqual(
      readdirSync(local).filter((file) => file === "x" || file === "no" || file.includes("fsb-partial")),
      [],
      "no file and no partial file is left behind",
    );
  });
});
