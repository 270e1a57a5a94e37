import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { Command } from "@commander-js/extra-typings";
import { separateCommandWords } from "./command-words.js";

/** A program of fsb's shape (main.ts's own runs when imported; main.spec.ts runs that one through this). */
function program(): Command {
  const root = new Command("fsb").option("--data-dir <dir>").exitOverride();
  root
    .command("exec")
    .argument("<name>")
    .argument("[command...]")
    .option("-n, --namespace <ns>")
    .option("-e, --env <NAME=VALUE>", "", (value: string, all: string[]) => [...all, value], [] as string[])
    .option("-w, --workdir <dir>")
    .option("-u, --user <user>")
    .option("-i, --interactive")
    .option("-t, --tty");
  root.command("run").argument("[command...]").option("--name <name>").option("-p, --port <port>").option("-q, --quiet");
  root.command("logs").argument("<name>").option("-f, --follow");
  root.command("cp").argument("<src>").argument("<dst>");
  return root;
}

const fsb = program();
const separated = (...words: string[]) => separateCommandWords(fsb, ["node", "fsb", ...words]).slice(2);

describe("separateCommandWords", () => {
  it("puts -- before the command of exec: its flags are the command's, not fsb's", () => {
    assert.deepEqual(separated("exec", "web", "echo", "-e", "A=1", "hi"), ["exec", "web", "--", "echo", "-e", "A=1", "hi"]);
    assert.deepEqual(separated("exec", "web", "ls", "-l", "/tmp"), ["exec", "web", "--", "ls", "-l", "/tmp"]);
    assert.deepEqual(separated("exec", "-it", "web", "-u", "app:staff", "-e", "A=1", "sh"), ["exec", "-it", "web", "-u", "app:staff", "-e", "A=1", "--", "sh"]);
    assert.deepEqual(separated("exec", "web", "-eA=1", "--workdir=/tmp", "-n", "team", "pwd"), [
      "exec",
      "web",
      "-eA=1",
      "--workdir=/tmp",
      "-n",
      "team",
      "--",
      "pwd",
    ]);
    assert.deepEqual(separated("--data-dir", "/srv/fsb", "exec", "web", "echo", "-n", "hi"), [
      "--data-dir",
      "/srv/fsb",
      "exec",
      "web",
      "--",
      "echo",
      "-n",
      "hi",
    ]);
  });

  it("puts -- before the command of run, after fsb's flags and their values", () => {
    assert.deepEqual(separated("run", "--name", "web", "-p", "8080", "sh", "-c", "echo hi"), [
      "run",
      "--name",
      "web",
      "-p",
      "8080",
      "--",
      "sh",
      "-c",
      "echo hi",
    ]);
    assert.deepEqual(separated("run", "-q", "sleep", "10"), ["run", "-q", "--", "sleep", "10"]);
  });

  it("leaves a command line that has its -- already, has no command, or is of another subcommand as it is", () => {
    for (const words of [
      ["exec", "web", "-u", "root", "--", "id", "-u"],
      ["exec", "web"],
      ["run", "--name", "web"],
      ["logs", "web", "-f"],
      ["cp", "a.txt", "web:/tmp/a.txt"],
      ["exec", "--help"],
    ]) {
      assert.deepEqual(separated(...words), words);
    }
  });

  it("reaches the command through fsb's parser: exec and run get every word after the first of the command", async () => {
    const seen: { command?: string[]; env?: string[] } = {};
    const parser = program();
    const exec = parser.commands.find((command) => command.name() === "exec");
    assert.ok(exec);
    exec.action((...args: unknown[]) => {
      seen.command = args[1] as string[];
      seen.env = (args[2] as { env: string[] }).env;
    });
    await parser.parseAsync(separateCommandWords(parser, ["node", "fsb", "exec", "web", "-e", "B=2", "echo", "-e", "A=1", "hi"]));
    assert.deepEqual(seen, { command: ["echo", "-e", "A=1", "hi"], env: ["B=2"] });
  });
});
