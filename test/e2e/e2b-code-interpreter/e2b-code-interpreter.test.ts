/**
 * E2B's code-interpreter SDKs against a real embedded Fast Sandbox, with nothing but the three
 * variables `fsb e2b env` prints: the Python one (PyPI `e2b-code-interpreter`, pinned in
 * requirements.txt) runs its pytest module, the JS one (npm `@e2b/code-interpreter`, pinned in the
 * root package.json) the cases below, both written from E2B's public documentation. Its default template,
 * `code-interpreter-v1`, is the sample pool of that name (config/samples/code-interpreter-pool.yaml) running the code-interpreter image
 * (scripts/build-code-interpreter-image.sh: images/code-interpreter/code_interpreter.py, E2B's
 * code-interpreter API on port 49999, reached through the sandbox proxy like any port of a sandbox
 * made through the E2B-compatible API). The SDK is installed into a virtualenv under the cache
 * directory (made once per requirements.txt), never into the repository.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { Sandbox, TimeoutError, type BarChart, type OutputMessage } from "@e2b/code-interpreter";
import { parse } from "yaml";
import type { SandboxPool } from "@fast-sandbox/api";
import { CODE_INTERPRETER_IMAGE, REPO_ROOT, importCodeInterpreterImage } from "../../support/containerd.js";
import { e2bEnvironment, useFsbE2bEnv } from "../../support/e2b-env.js";
import { containerdLeftovers, pool, startEmbedded, type EmbeddedCase } from "../../support/embedded.js";
import { assertPytestPasses, runProgram, virtualenv } from "../../support/python-venv.js";

const HERE = dirname(fileURLToPath(import.meta.url));

describe("E2B's code-interpreter SDK against the E2B-compatible API and the code-interpreter image", () => {
  let embedded: EmbeddedCase;
  let venv = "";

  before(
    async () => {
      venv = await virtualenv("e2b-code-interpreter", join(HERE, "requirements.txt"));
      embedded = await startEmbedded({ name: "e2b-code-interp", pools: [pool("default", { maxSandboxesPerPod: 4 })] });
      importCodeInterpreterImage(embedded.containerdNamespace);
      // The pool as the README has users apply it: `fsb apply -n default -f config/samples/code-interpreter-pool.yaml`.
      const sample = join(REPO_ROOT, "config/samples/code-interpreter-pool.yaml");
      assert.equal((parse(readFileSync(sample, "utf8")) as SandboxPool).spec.image, CODE_INTERPRETER_IMAGE);
      // Not spawnSync: the control plane answering it runs in this process.
      const applied = await runProgram(
        process.execPath,
        [join(REPO_ROOT, "packages/cli/bin/fsb.js"), "--url", embedded.controlPlane.url, "apply", "-n", "default", "-f", sample],
        { env: { ...process.env, FSB_TOKEN: embedded.token, FSB_DATA_DIR: embedded.dataDir }, cwd: HERE, timeoutMs: 60_000 },
      );
      assert.equal(applied.code, 0, applied.output);
      assert.equal((await embedded.client.pools.get("code-interpreter-v1", { namespace: "default" })).spec.image, CODE_INTERPRETER_IMAGE);
    },
    { timeout: 900_000 },
  );

  after(async () => {
    await embedded.stop();
  });

  it(
    "passes the SDK's pytest module: run_code's results, streams, errors, envs, display, contexts, interrupted runs, and the sandbox's other APIs",
    { timeout: 600_000 },
    async () => {
      const env = await e2bEnvironment(embedded);
      await assertPytestPasses(venv, "test_e2b_code_interpreter.py", { env, cwd: HERE, timeoutMs: 540_000, atLeast: 30 });
    },
  );

  describe("the JS SDK", () => {
    let restore: () => void = () => undefined;
    let sandbox: Sandbox;

    before(async () => {
      // Only the three variables: nothing else of E2B's is set in this process.
      restore = await useFsbE2bEnv(embedded);
      sandbox = await Sandbox.create({ timeoutMs: 300_000, envs: { FROM_CREATE: "js" } });
    });

    after(async () => {
      await sandbox.kill();
      restore();
    });

    it("runCode: the last expression's value, streamed stdout, state across runs, the sandbox's envs", async () => {
      const printed: string[] = [];
      const execution = await sandbox.runCode("x = 40\nprint('from js')\nx + 2", { onStdout: (message: OutputMessage) => void printed.push(message.line) });
      assert.equal(execution.error, undefined);
      assert.equal(execution.text, "42");
      assert.deepEqual(execution.logs.stdout, ["from js\n"]);
      assert.deepEqual(printed, ["from js\n"]);
      assert.equal((await sandbox.runCode("x * 2")).text, "80");
      assert.equal((await sandbox.runCode("import os\nos.environ['FROM_CREATE']")).text, "'js'");
      assert.equal((await sandbox.runCode("os.environ['ONLY_NOW']", { envs: { ONLY_NOW: "yes" } })).text, "'yes'");
    });

    it("an error is the execution's, with name, value and traceback", async () => {
      const execution = await sandbox.runCode("int('not a number')");
      assert.equal(execution.error?.name, "ValueError");
      assert.match(execution.error?.value ?? "", /invalid literal for int/);
      assert.match(execution.error?.traceback ?? "", /int\('not a number'\)/);
    });

    it("contexts: separate state, listed, restarted (state cleared) and removed", async () => {
      const context = await sandbox.createCodeContext({ cwd: "/tmp" });
      assert.equal(context.cwd, "/tmp");
      assert.equal((await sandbox.runCode("mine = 1\nmine", { context })).text, "1");
      assert.equal((await sandbox.runCode("mine")).error?.name, "NameError", "the default context does not see it");
      assert.ok((await sandbox.listCodeContexts()).some((known) => known.id === context.id));
      await sandbox.restartCodeContext(context);
      assert.equal((await sandbox.runCode("mine", { context })).error?.name, "NameError", "a restart clears the context's state");
      await sandbox.removeCodeContext(context);
      assert.ok(!(await sandbox.listCodeContexts()).some((known) => known.id === context.id));
    });

    it('language "bash": the shell\'s state across runs, its output, a failing last command as the error', async () => {
      const stdout = (execution: { logs: { stdout: string[] } }) => execution.logs.stdout.join("");
      assert.equal((await sandbox.runCode("cd /tmp; counted=2", { language: "bash" })).error, undefined);
      assert.equal(stdout(await sandbox.runCode('echo "$((counted * 21)) in $PWD, $FROM_CREATE"', { language: "bash" })), "42 in /tmp, js\n");
      const failed = await sandbox.runCode("echo before; cat /no/such/file", { language: "bash" });
      assert.equal(stdout(failed), "before\n");
      assert.equal(failed.error?.name, "CommandExitError");
      assert.equal(failed.error?.value, "exit status 1");
      const context = await sandbox.createCodeContext({ language: "bash" });
      assert.equal(context.language, "bash");
      assert.equal(stdout(await sandbox.runCode('echo "[${counted-}]"', { context })), "[]\n", "a bash context of its own");
      await sandbox.removeCodeContext(context);
    });

    it('language "js": declarations across runs, top-level await, the last value, errors with their stack', async () => {
      assert.equal((await sandbox.runCode("const base = await Promise.resolve(40)\nbase + 2", { language: "js" })).text, "42");
      const later = await sandbox.runCode("console.log('logged'); [base, process.env.FROM_CREATE]", { language: "js" });
      assert.deepEqual(later.logs.stdout, ["logged\n"]);
      assert.equal(later.text, "[ 40, 'js' ]");
      const failed = await sandbox.runCode("JSON.parse('{nope')", { language: "js" });
      assert.equal(failed.error?.name, "SyntaxError");
      assert.match(failed.error?.traceback ?? "", /at <cell>:1:6/);
    });

    it('language "r": the global environment across runs, every visible value, logs, warnings, env vars and R\'s errors', async () => {
      const defined = await sandbox.runCode("scores <- c(3, 4, 8)\nlength(scores)\nmean(scores)", { language: "r" });
      assert.equal(defined.error, undefined);
      assert.deepEqual(
        defined.results.map((result) => [result.text, result.isMainResult]),
        [
          ["[1] 3", false],
          ["[1] 5", true],
        ],
      );
      assert.equal(defined.text, "[1] 5");
      const logged = await sandbox.runCode('cat("sum", sum(scores), "\\n"); message("to stderr"); x <- log(-1); invisible(Sys.getenv("ONLY_NOW"))', {
        language: "R",
        envs: { ONLY_NOW: "set" },
      });
      assert.equal(logged.logs.stdout.join(""), "sum 15 \n");
      assert.equal(logged.logs.stderr.join(""), "to stderr\nWarning message:\nIn log(-1) : NaNs produced\n");
      assert.deepEqual(logged.results, [], "an invisible value is no result");
      assert.equal((await sandbox.runCode('Sys.getenv("ONLY_NOW", "gone")', { language: "r" })).text, '[1] "gone"', "a run's envs are its own");
      assert.equal((await sandbox.runCode('paste("from create:", Sys.getenv("FROM_CREATE"), "é")', { language: "r" })).text, '[1] "from create: js é"');
      const failed = await sandbox.runCode('check <- function(x) if (x > 5) stop("too big: ", x)\nrun <- function() check(scores[[3]])\nrun()', {
        language: "r",
      });
      assert.equal(failed.error?.name, "Error");
      assert.equal(failed.error?.value, "too big: 8");
      assert.equal(failed.error?.traceback, "Error in check(scores[[3]]) : too big: 8\nCalls: run -> check");
      assert.equal((await sandbox.runCode("nope(", { language: "r" })).error?.name, "Error", "a parse error");
      const plotted = await sandbox.runCode('plot(scores, main = "scores")\nhist(scores)\n"drawn"', { language: "r" });
      assert.equal(plotted.error, undefined);
      assert.deepEqual(
        plotted.results.map((result) => [result.formats(), result.isMainResult]),
        [
          [["png"], false],
          [["png"], false],
          [[], true],
        ],
        "each page a PNG result, then the value",
      );
      assert.equal(
        Buffer.from(plotted.results[0]?.png ?? "", "base64")
          .subarray(1, 4)
          .toString(),
        "PNG",
      );
      const context = await sandbox.createCodeContext({ language: "r" });
      assert.equal((await sandbox.runCode('exists("scores")', { context })).text, "[1] FALSE", "an R context of its own");
      await sandbox.removeCodeContext(context);
    });

    it("language \"java\": JShell's declarations across runs, the last expression's value, logs and errors", async () => {
      const defined = await sandbox.runCode(
        'var words = new ArrayList<>(List.of("fast", "sandbox"));\nSystem.out.println(words.size());\nString.join(" ", words)',
        {
          language: "java",
        },
      );
      assert.equal(defined.error, undefined);
      assert.equal(defined.logs.stdout.join(""), "2\n");
      assert.equal(defined.text, '"fast sandbox"');
      assert.equal((await sandbox.runCode("words.stream().mapToInt(String::length).sum()", { language: "java" })).text, "11");
      const failed = await sandbox.runCode("words.get(5)", { language: "java" });
      assert.equal(failed.error?.name, "java.lang.IndexOutOfBoundsException");
      assert.match(failed.error?.traceback ?? "", /\n\tat \(#\d+:1\)$/);
      assert.equal((await sandbox.runCode("words.nope()", { language: "java" })).error?.name, "CompilationException");
    });

    it("a matplotlib figure: its png and its chart; a DataFrame's HTML", async () => {
      const execution = await sandbox.runCode("import matplotlib.pyplot as plt\nplt.bar(['a', 'b'], [2, 3], label='n')\nplt.title('counts')\nplt.show()");
      assert.equal(execution.error, undefined);
      const [figure] = execution.results;
      assert.equal(
        Buffer.from(figure?.png ?? "", "base64")
          .subarray(1, 4)
          .toString(),
        "PNG",
      );
      assert.equal(figure?.text, "<Figure size 640x480 with 1 Axes>");
      assert.deepEqual(figure?.formats(), ["png"], "the SDK lists neither text nor chart; nothing is left over as extra");
      const chart = figure?.chart as BarChart | undefined;
      assert.equal(chart?.type, "bar");
      assert.equal(chart?.title, "counts");
      assert.deepEqual(
        chart?.elements.map((bar) => [bar.label, bar.group, bar.value]),
        [
          ["a", "n", 2],
          ["b", "n", 3],
        ],
      );
      const frame = await sandbox.runCode("import pandas as pd\npd.DataFrame({'n': [1, 2]})");
      assert.match(frame.results[0]?.html ?? "", /<table/);
    });

    it("a run past its timeoutMs is interrupted: TimeoutError, and the context keeps its state", async () => {
      await sandbox.runCode("kept = 'yes'");
      await assert.rejects(sandbox.runCode("import time\nwhile True:\n    time.sleep(0.05)", { timeoutMs: 1000 }), TimeoutError);
      assert.equal((await sandbox.runCode("kept")).text, "'yes'");
    });
  });

  it("leaves no sandbox behind", async () => {
    const sandboxes = await embedded.client.sandboxes.list({ namespace: "*" });
    assert.deepEqual(
      sandboxes.map((sandbox) => sandbox.metadata.name),
      [],
    );
    assert.deepEqual(
      containerdLeftovers(embedded.containerdNamespace).containers.filter((id) => !id.startsWith("fsb-anchor") && !id.startsWith("fsb-prepared-")),
      [],
    );
  });
});
