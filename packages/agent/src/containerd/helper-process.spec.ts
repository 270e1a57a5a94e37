/**
 * The in-sandbox helper (helper/fsb-helper.c) as a process: the built static binary, run as root
 * outside a sandbox, in namespaces of its own (unshare) where a test needs them — a private mount
 * namespace to give it an image's /etc/passwd and /etc/group, a PID namespace whose end takes every
 * process it started — and under a pids limit (prlimit --nproc, for an unprivileged uid) where a
 * test needs a fork to fail. Outside a sandbox it has no run directory (/.fast-sandbox/run), so what
 * it would record there is read from its stderr and its command's output instead.
 */
import assert from "node:assert/strict";
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import {
  chmodSync,
  chownSync,
  constants,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  closeSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { after, describe, it } from "node:test";
import { DEFAULT_HELPER_PATH } from "../agent-config.js";

const REPO = fileURLToPath(new URL("../../../../", import.meta.url));
// The binary under test is the current source's: rebuilt here when the source is newer (as `npm run build` does).
const build = spawnSync("bash", [join(REPO, "scripts/build-helper.sh")], { encoding: "utf8" });
const missingTool = ["unshare", "setpriv", "prlimit", "mount", "id"].find((tool) => spawnSync("sh", ["-c", `command -v ${tool}`]).status !== 0);
// What these cases need is installed by scripts/install-deps.sh and CI runs as root: a missing piece
// fails the file, never skips it.
const missing =
  process.platform !== "linux"
    ? "the helper is a Linux program"
    : process.getuid?.() !== 0
      ? "needs root (namespaces, bind mounts, other uids)"
      : missingTool
        ? `needs ${missingTool} (util-linux)`
        : !existsSync(DEFAULT_HELPER_PATH)
          ? `no built helper at ${DEFAULT_HELPER_PATH}: ${build.stderr}`
          : undefined;
if (missing) throw new Error(`helper-process.spec: ${missing}`);
const HELPER = DEFAULT_HELPER_PATH;

const root = mkdtempSync(join(tmpdir(), "fsb-helper-process-"));
chmodSync(root, 0o755); // other uids reach what the tests make for them
after(() => rmSync(root, { recursive: true, force: true }));
let dirs = 0;

function freshDir(name: string, mode = 0o755): string {
  const dir = join(root, `${name}-${++dirs}`);
  mkdirSync(dir);
  chmodSync(dir, mode);
  return dir;
}

/** A uid of no account, this run's own: a pids limit (RLIMIT_NPROC) counts every process of the uid. */
let uids = 0;
function unusedUid(): number {
  return 1_900_000 + (process.pid % 10_000) * 10 + ++uids;
}

/** Waits for condition() within a generous bound (not a measure of speed: it fails only when the event never comes). */
async function until(what: string, condition: () => boolean, boundMs = 8000): Promise<void> {
  const deadline = Date.now() + boundMs;
  while (!condition()) {
    if (Date.now() > deadline) assert.fail(`${what}: not within ${boundMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

interface Running {
  child: ChildProcess;
  stdout: () => string;
  stderr: () => string;
  /** Ends it (SIGKILL) and waits for its end. */
  stop: () => Promise<void>;
}

/** Spawns it; `kill` ends what it started on stop (by default, the process itself with SIGKILL). */
function start(command: string, args: string[], kill: (child: ChildProcess) => void = (child) => child.kill("SIGKILL")): Running {
  const child = spawn(command, args, { stdio: ["pipe", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  child.stdout?.setEncoding("utf8").on("data", (chunk: string) => (stdout += chunk));
  child.stderr?.setEncoding("utf8").on("data", (chunk: string) => (stderr += chunk));
  const ended = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  return {
    child,
    stdout: () => stdout,
    stderr: () => stderr,
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) kill(child);
      await ended;
      for (const stream of [child.stdin, child.stdout, child.stderr]) stream?.destroy();
    },
  };
}

/**
 * The helper as process 1 of a PID namespace of its own (so nothing it starts outlives the test:
 * its end ends the namespace's every process), as `uid` (no capability: the pids limit holds) with
 * a pids limit of `nproc` processes of that uid. Stopped by a SIGKILL to it (unshare's child; a
 * parent-death signal would not do: the change of uid clears it), after which unshare exits.
 */
function startLimitedHelper(uid: number, nproc: number, helperArgs: string[]): Running {
  const killNamespace = (unshare: ChildProcess): void => {
    const pid = unshare.pid ?? 0;
    let children = "";
    try {
      children = readFileSync(`/proc/${pid}/task/${pid}/children`, "utf8");
    } catch {
      // unshare has exited: so has its namespace
    }
    for (const helper of children.trim().split(/\s+/).filter(Boolean)) process.kill(Number(helper), "SIGKILL");
  };
  return start(
    "unshare",
    ["--pid", "--fork", "setpriv", `--reuid=${uid}`, `--regid=${uid}`, "--clear-groups", "prlimit", `--nproc=${nproc}`, HELPER, ...helperArgs],
    killNamespace,
  );
}

/**
 * A stand-in for the in-sandbox daemon: appends `started` to its log, then waits on a FIFO, so
 * the test can end it (a daemon that dies) by writing a line into the FIFO. Forks nothing.
 */
function fakeDaemon(uid: number): { path: string; starts: () => number; kill: () => void } {
  const dir = freshDir("daemon");
  chownSync(dir, uid, uid);
  const log = join(dir, "log");
  const fifo = join(dir, "fifo");
  assert.equal(spawnSync("mkfifo", ["-m", "0666", fifo]).status, 0);
  const path = join(dir, "daemon.sh");
  writeFileSync(path, `#!/bin/sh\necho started >>${log}\nread line <${fifo}\n`);
  chmodSync(path, 0o755);
  return {
    path,
    starts: () =>
      existsSync(log)
        ? readFileSync(log, "utf8")
            .split("\n")
            .filter((line) => line === "started").length
        : 0,
    kill: () => {
      // Without blocking: ENXIO when no daemon has the FIFO open for reading.
      const fd = openSync(fifo, constants.O_WRONLY | constants.O_NONBLOCK);
      try {
        writeFileSync(fd, "die\n");
      } finally {
        closeSync(fd);
      }
    },
  };
}

const CANNOT_FORK_DAEMON = "cannot fork the in-sandbox daemon: Resource temporarily unavailable";

describe("fsb-helper: the in-sandbox daemon under a full pids limit", () => {
  it("starts the daemon later when it could not fork it at first (the limit full), once the limit has room", async () => {
    const uid = unusedUid();
    const daemon = fakeDaemon(uid);
    // A limit of 2: the helper and its command fill it, so the daemon's first fork fails (EAGAIN).
    // The command (a shell's `read`, no fork) ends when its stdin closes, freeing a process.
    const helper = startLimitedHelper(uid, 2, ["--envd", daemon.path, "--", "/bin/sh", "-c", "read line"]);
    try {
      await until("the helper's report of the daemon's failed fork", () => helper.stderr().includes(CANNOT_FORK_DAEMON));
      assert.equal(daemon.starts(), 0);
      helper.child.stdin?.end();
      // Before the fix the helper never tried again: the daemon stayed dead for the sandbox's life.
      await until("the daemon's start once the command ended", () => daemon.starts() === 1);
    } finally {
      await helper.stop();
    }
  });

  it("restarts a daemon that died while the limit was full once it has room, not only when the first restart forks", async () => {
    const uid = unusedUid();
    const daemon = fakeDaemon(uid);
    // A limit of 3: the helper, its command and the daemon.
    const helper = startLimitedHelper(uid, 3, ["--envd", daemon.path, "--", "/bin/sh", "-c", "read line"]);
    let filler: Running | undefined;
    try {
      await until("the daemon's first start", () => daemon.starts() === 1);
      // Another process of the uid (outside the limit's reach: its own limit is the default) fills the
      // daemon's place, as a fork bomb in the sandbox would; then the daemon dies.
      filler = start("setpriv", [`--reuid=${uid}`, `--regid=${uid}`, "--clear-groups", "sleep", "1000"]);
      await until(
        "the filler's start",
        () => spawnSync("ps", ["-o", "uid=", "-p", String(filler?.child.pid)], { encoding: "utf8" }).stdout.trim() === String(uid),
      );
      daemon.kill();
      await until("the helper's report of the restart's failed fork", () => helper.stderr().includes(CANNOT_FORK_DAEMON));
      assert.equal(daemon.starts(), 1);
      await filler.stop();
      // Before the fix a restart whose fork failed was the last: the daemon stayed dead.
      await until("the daemon's restart once the filler ended", () => daemon.starts() === 2);
    } finally {
      await filler?.stop();
      await helper.stop();
    }
  });
});

describe("fsb-helper: user and group ids out of range", () => {
  const image = freshDir("image");
  const passwd = join(image, "passwd");
  const group = join(image, "group");
  writeFileSync(
    passwd,
    [
      "root:x:0:0:root:/root:/bin/sh",
      "big:x:4294967296:1000:big:/home/big:/bin/sh",
      "bigpast:x:2147483648:1000:bigpast:/home/bigpast:/bin/sh",
      "biggroup:x:1001:4294967296:biggroup:/home/biggroup:/bin/sh",
      "huge:x:99999999999999999999999:1000:huge:/home/huge:/bin/sh",
      "max:x:2147483647:2147483647:max:/home/max:/bin/sh",
      "app:x:1000:1000:app:/home/app:/bin/sh",
      "wheeler:x:1002:1000:wheeler:/home/wheeler:/bin/sh",
      "",
    ].join("\n"),
  );
  writeFileSync(group, ["root:x:0:", "app:x:1000:", "staff:x:50:app", "wheel:x:4294967296:wheeler", ""].join("\n"));

  /** `fsb-helper --exec-as USER -- id ARG` with this image's /etc/passwd and /etc/group (bind-mounted in a mount namespace of its own). */
  function execAs(user: string, idArg: string): { status: number | null; stdout: string; stderr: string } {
    const script = 'mount --bind "$1" /etc/passwd && mount --bind "$2" /etc/group && exec "$3" --exec-as "$4" -- id "$5"';
    const result = spawnSync("unshare", ["--mount", "--propagation", "private", "sh", "-c", script, "sh", passwd, group, HELPER, user, idArg], {
      encoding: "utf8",
      timeout: 8000,
    });
    return { status: result.status, stdout: result.stdout, stderr: result.stderr };
  }

  it("refuses a uid or gid above 2147483647 (EINVAL, exit 126) instead of wrapping it (4294967296 was root)", () => {
    const cases: [user: string, idArg: string][] = [
      ["big", "-u"], // /etc/passwd's uid 4294967296
      ["bigpast", "-u"], // one above the largest
      ["biggroup", "-g"], // /etc/passwd's gid 4294967296
      ["huge", "-u"], // beyond even an unsigned long
      ["4294967296", "-u"], // a number with no /etc/passwd entry
      ["app:4294967296", "-g"], // a group number
      ["app:wheel", "-g"], // /etc/group's gid 4294967296
      ["wheeler", "-G"], // a member of that group
    ];
    for (const [user, idArg] of cases) {
      const result = execAs(user, idArg);
      assert.equal(result.status, 126, `${user}: status ${result.status}, stdout ${JSON.stringify(result.stdout)}, stderr ${result.stderr}`);
      assert.equal(result.stdout, "", user);
      assert.equal(result.stderr, `fast-sandbox: cannot run the command: user ${user}: Invalid argument\n`, user);
    }
  });

  it("still takes every id up to 2147483647, and the groups of /etc/group", () => {
    assert.deepEqual(execAs("max", "-u"), { status: 0, stdout: "2147483647\n", stderr: "" });
    assert.deepEqual(execAs("max", "-g"), { status: 0, stdout: "2147483647\n", stderr: "" });
    assert.deepEqual(execAs("2147483647:2147483647", "-g"), { status: 0, stdout: "2147483647\n", stderr: "" });
    assert.deepEqual(execAs("app", "-u"), { status: 0, stdout: "1000\n", stderr: "" });
    assert.deepEqual(execAs("app", "-G").stdout.trim().split(" ").sort(), ["1000", "50"]);
    assert.deepEqual(execAs("app:staff", "-G"), { status: 0, stdout: "50\n", stderr: "" });
    // No such user: 126 (the command is there; it cannot be run as that user), as docker exec -u says it.
    assert.deepEqual(execAs("ghost", "-u"), {
      status: 126,
      stdout: "",
      stderr: "fast-sandbox: cannot run the command: unable to find user ghost: no matching entries in /etc/passwd or /etc/group\n",
    });
  });
});

describe("fsb-helper: the working directory is entered as the command's user", () => {
  const NOBODY = "65534:65534";

  /**
   * Runs `fsb-helper --workdir DIR [--user USER] -- /bin/pwd` and gives its command's first line of
   * output (pwd's) or the helper's report of a failed start, whichever comes (the helper itself
   * stays up after its command, as process 1 does).
   */
  async function pwdIn(workdir: string, user?: string): Promise<{ stdout: string; stderr: string }> {
    const helper = start(HELPER, ["--workdir", workdir, ...(user ? ["--user", user] : []), "--", "/bin/pwd"]);
    try {
      await until("the command's output or the report of its failed start", () => helper.stdout().endsWith("\n") || helper.stderr().endsWith("\n"));
      return { stdout: helper.stdout(), stderr: helper.stderr() };
    } finally {
      await helper.stop();
    }
  }

  it("fails the start (chdir, permission denied) in a directory the user cannot enter, as runc does", async () => {
    const locked = freshDir("locked", 0o700); // root's alone
    const inside = join(locked, "open");
    mkdirSync(inside, { mode: 0o755 });
    assert.deepEqual(await pwdIn(inside, NOBODY), { stdout: "", stderr: `fast-sandbox: cannot run the command: chdir ${inside}: Permission denied\n` });
    // root still enters it.
    assert.deepEqual(await pwdIn(inside), { stdout: `${inside}\n`, stderr: "" });
  });

  it("still makes a missing working directory as root (mode 0755), then enters it as the user", async () => {
    const parent = freshDir("parent");
    const workdir = join(parent, "a", "b");
    assert.deepEqual(await pwdIn(workdir, NOBODY), { stdout: `${workdir}\n`, stderr: "" });
    for (const dir of [join(parent, "a"), workdir]) {
      const made = statSync(dir);
      assert.equal(made.uid, 0, dir);
      assert.equal(made.gid, 0, dir);
      assert.equal(made.mode & 0o7777, 0o755, dir);
    }
  });

  it("makes a missing directory the user cannot reach, and then fails its entry as the user", async () => {
    const locked = freshDir("locked", 0o700);
    const workdir = join(locked, "new");
    assert.deepEqual(await pwdIn(workdir, NOBODY), { stdout: "", stderr: `fast-sandbox: cannot run the command: chdir ${workdir}: Permission denied\n` });
    assert.equal(statSync(workdir).uid, 0);
  });

  it("still reports a working directory under a file as chdir's failure (not a directory), making nothing", async () => {
    const parent = freshDir("parent");
    writeFileSync(join(parent, "file"), "");
    const workdir = join(parent, "file", "x");
    assert.deepEqual(await pwdIn(workdir, NOBODY), { stdout: "", stderr: `fast-sandbox: cannot run the command: chdir ${workdir}: Not a directory\n` });
    assert.deepEqual(await pwdIn(workdir), { stdout: "", stderr: `fast-sandbox: cannot run the command: chdir ${workdir}: Not a directory\n` });
  });
});
