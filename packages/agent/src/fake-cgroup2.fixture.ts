/**
 * Specs' cgroup2 tree: a temporary directory that answers cgroup.ts's writes as the kernel's cgroup2
 * filesystem does, so the v2 paths are tested on a host without one (this machine's is v1). While
 * installed, node:fs's writeFileSync and mkdirSync behave as the kernel's for paths under the tree
 * (syncBuiltinESMExports carries them to the named imports cgroup.ts holds) and as before elsewhere;
 * reads are plain reads of the files the fake keeps as the kernel would show them.
 *
 * What it mimics, each a refusal cgroup.ts must cope with:
 *  - mkdir of a cgroup makes its interface files: cgroup.* and the files of the controllers its parent
 *    enables for its children (cpu.max, memory.max, pids.max…); `cgroup.controllers` lists those.
 *  - A write to a file that does not exist fails with EACCES: kernfs cannot create files (a write
 *    to cpu.max of a cgroup whose parent does not enable cpu, say).
 *  - `cgroup.subtree_control` takes a whole write or none of it: a controller not in
 *    `cgroup.controllers` is ENOENT; a non-root cgroup that holds processes refuses to enable any
 *    (EBUSY: "no internal processes", a cgroup either holds processes or delegates controllers);
 *    `refuse` makes the kernel refuse one controller (cpu is EINVAL with RT group scheduling while a
 *    realtime task runs outside the root). Enabling one makes its files in every child.
 *  - `cgroup.procs`: moving a process into a non-root cgroup that enables controllers for its
 *    children is EBUSY (the same rule, the other way); a process moved leaves its old cgroup. Pids
 *    are kept as written: 0 stands for a process outside the reader's PID namespace, as the kernel
 *    lists one.
 *  - `cgroup.kill` (Linux 5.14+; `withoutKill` for before) kills every process of the subtree.
 */
import fs from "node:fs";
import { syncBuiltinESMExports } from "node:module";
import { tmpdir } from "node:os";
import { basename, dirname, join, relative } from "node:path";

/** The interface files a controller gives a cgroup below the root, as a new cgroup shows them. */
const CONTROLLER_FILES: Record<string, Record<string, string>> = {
  cpu: { "cpu.max": "max 100000\n", "cpu.weight": "100\n" },
  memory: { "memory.max": "max\n", "memory.current": "0\n", "memory.swap.max": "max\n", "memory.events": "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n" },
  pids: { "pids.max": "max\n", "pids.current": "0\n" },
  io: { "io.max": "" },
};

function errnoError(code: string, message: string): NodeJS.ErrnoException {
  const error: NodeJS.ErrnoException = new Error(`${code}: ${message}`);
  error.code = code;
  return error;
}

export class FakeCgroup2 {
  /** The tree's root, the `root` of a v2 CgroupLayout. */
  readonly root: string;
  /** Every write under the tree, refused ones included: `<path> <- <value>`. */
  readonly writes: string[] = [];
  /** Controllers the kernel refuses to enable anywhere, with the errno it answers. */
  readonly refuse = new Map<string, string>();
  /** Before Linux 5.14: no cgroup.kill. */
  private readonly withoutKill: boolean;
  private readonly realWriteFileSync = fs.writeFileSync;
  private readonly realMkdirSync = fs.mkdirSync;

  /** Installs a tree whose root offers `controllers`; `restore` undoes it. */
  constructor(controllers = ["cpu", "io", "memory", "pids"], options: { withoutKill?: boolean } = {}) {
    this.root = join(fs.mkdtempSync(join(tmpdir(), "fsb-fake-cgroup2-")), "cgroup");
    this.withoutKill = options.withoutKill ?? false;
    this.realMkdirSync(this.root);
    this.realWriteFileSync(join(this.root, "cgroup.controllers"), `${controllers.join(" ")}\n`);
    this.realWriteFileSync(join(this.root, "cgroup.subtree_control"), "\n");
    this.realWriteFileSync(join(this.root, "cgroup.procs"), "1\n");
    (fs as { writeFileSync: unknown }).writeFileSync = (file: fs.PathOrFileDescriptor, data: unknown, options?: fs.WriteFileOptions) => {
      if (typeof file === "string" && this.holds(file)) return this.write(file, String(data));
      return this.realWriteFileSync(file, data as string, options);
    };
    (fs as { mkdirSync: unknown }).mkdirSync = (path: fs.PathLike, options?: fs.MakeDirectoryOptions) => {
      if (typeof path === "string" && this.holds(path)) return this.mkdir(path);
      return this.realMkdirSync(path, options);
    };
    syncBuiltinESMExports();
  }

  /** node:fs as it was; the tree is removed. */
  restore(): void {
    (fs as { writeFileSync: unknown }).writeFileSync = this.realWriteFileSync;
    (fs as { mkdirSync: unknown }).mkdirSync = this.realMkdirSync;
    syncBuiltinESMExports();
    fs.rmSync(dirname(this.root), { recursive: true, force: true });
  }

  /** The path of `file` in the cgroup at `path` (relative to the root, `""` or `/` for it). */
  path(path: string, file = ""): string {
    return join(this.root, path.replace(/^\/+/, ""), file);
  }

  /** A file of the cgroup at `path`, trimmed. */
  read(path: string, file: string): string {
    return fs.readFileSync(this.path(path, file), "utf8").trim();
  }

  /** What a process writes to a file of the cgroup at `path`, refused as the kernel would. */
  writeAs(path: string, file: string, value: string): void {
    this.write(this.path(path, file), value);
  }

  /** Makes the cgroup at `path` (and its missing ancestors), as mkdir in cgroupfs does. */
  makeCgroup(path: string): void {
    this.mkdir(this.path(path));
  }

  /** Processes started in the cgroup at `path` (forked there; 0: one outside the reader's PID namespace). */
  addProcesses(path: string, pids: number[]): void {
    const procs = this.procs(this.path(path));
    this.realWriteFileSync(this.path(path, "cgroup.procs"), lines([...procs, ...pids.map(String)]));
    if (fs.existsSync(this.path(path, "pids.current"))) this.realWriteFileSync(this.path(path, "pids.current"), `${procs.length + pids.length}\n`);
  }

  private holds(path: string): boolean {
    const inside = relative(this.root, path);
    return inside === "" || (!inside.startsWith("..") && !inside.startsWith("/"));
  }

  private mkdir(path: string): string | undefined {
    let current = this.root;
    let first: string | undefined;
    for (const part of relative(this.root, path).split("/").filter(Boolean)) {
      current = join(current, part);
      if (fs.existsSync(current)) continue;
      this.realMkdirSync(current);
      const enabled = this.list(join(dirname(current), "cgroup.subtree_control"));
      this.realWriteFileSync(join(current, "cgroup.controllers"), lines([enabled.join(" ")]));
      this.realWriteFileSync(join(current, "cgroup.subtree_control"), "\n");
      this.realWriteFileSync(join(current, "cgroup.procs"), "");
      this.realWriteFileSync(join(current, "cgroup.events"), "populated 0\nfrozen 0\n");
      this.realWriteFileSync(join(current, "cpu.stat"), "usage_usec 0\n");
      if (!this.withoutKill) this.realWriteFileSync(join(current, "cgroup.kill"), "");
      this.makeControllerFiles(current, enabled);
      first ??= current;
    }
    return first;
  }

  private write(file: string, value: string): void {
    const directory = dirname(file);
    const name = basename(file);
    const cgroup = relative(this.root, directory) || "/";
    this.writes.push(`${relative(this.root, file)} <- ${value}`);
    if (!fs.existsSync(file)) throw errnoError("EACCES", `permission denied, open '${file}'`);
    if (name === "cgroup.subtree_control") return this.writeSubtreeControl(directory, value);
    if (name === "cgroup.procs") {
      if (directory !== this.root && this.list(join(directory, "cgroup.subtree_control")).length > 0) {
        throw errnoError("EBUSY", `device or resource busy, write '${file}' (${cgroup} enables controllers for its children)`);
      }
      const pid = value.trim();
      for (const other of this.cgroups()) {
        const procs = this.procs(other);
        if (procs.includes(pid)) this.realWriteFileSync(join(other, "cgroup.procs"), lines(procs.filter((p) => p !== pid)));
      }
      this.realWriteFileSync(file, lines([...this.procs(directory), pid]));
      return;
    }
    if (name === "cgroup.kill") {
      for (const cgroup of this.cgroups(directory)) {
        this.realWriteFileSync(join(cgroup, "cgroup.procs"), "");
        if (fs.existsSync(join(cgroup, "pids.current"))) this.realWriteFileSync(join(cgroup, "pids.current"), "0\n");
      }
    }
    this.realWriteFileSync(file, value);
  }

  /** All or nothing, as the kernel applies a write of several controllers. */
  private writeSubtreeControl(directory: string, value: string): void {
    const cgroup = relative(this.root, directory) || "/";
    const available = this.list(join(directory, "cgroup.controllers"));
    const before = this.list(join(directory, "cgroup.subtree_control"));
    const enabled = new Set(before);
    for (const token of value.split(/\s+/).filter(Boolean)) {
      const controller = token.slice(1);
      if (!available.includes(controller)) throw errnoError("ENOENT", `no such file or directory: ${controller} is not available in ${cgroup}`);
      if (token.startsWith("+")) enabled.add(controller);
      else enabled.delete(controller);
    }
    for (const controller of enabled) {
      const refusal = before.includes(controller) ? undefined : this.refuse.get(controller);
      if (refusal) throw errnoError(refusal, `the kernel refuses ${controller} in ${cgroup}`);
    }
    if (directory !== this.root && enabled.size > 0 && this.procs(directory).length > 0) {
      throw errnoError("EBUSY", `device or resource busy: ${cgroup} holds processes`);
    }
    const list = [...enabled].sort();
    this.realWriteFileSync(join(directory, "cgroup.subtree_control"), lines([list.join(" ")]));
    for (const entry of fs.readdirSync(directory, { withFileTypes: true })) {
      if (!entry.isDirectory()) continue;
      this.realWriteFileSync(join(directory, entry.name, "cgroup.controllers"), lines([list.join(" ")]));
      this.makeControllerFiles(join(directory, entry.name), list);
    }
  }

  private makeControllerFiles(directory: string, controllers: string[]): void {
    for (const controller of controllers) {
      for (const [name, value] of Object.entries(CONTROLLER_FILES[controller] ?? {})) {
        if (!fs.existsSync(join(directory, name))) this.realWriteFileSync(join(directory, name), value);
      }
    }
  }

  /** The cgroup at `directory` and every one below it. */
  private cgroups(directory = this.root): string[] {
    const below = fs
      .readdirSync(directory, { withFileTypes: true })
      .filter((entry) => entry.isDirectory())
      .flatMap((entry) => this.cgroups(join(directory, entry.name)));
    return [directory, ...below];
  }

  private procs(directory: string): string[] {
    return this.list(join(directory, "cgroup.procs"));
  }

  private list(file: string): string[] {
    return fs.existsSync(file) ? fs.readFileSync(file, "utf8").split(/\s+/).filter(Boolean) : [];
  }
}

function lines(items: string[]): string {
  return items.length === 0 ? "" : `${items.join("\n")}\n`;
}
