"use strict";
/**
 * A JavaScript (or TypeScript: `--strip-types`, see stripTypes) context of Fast Sandbox's code interpreter (code_interpreter.py starts one per
 * context, as its worker's child). Each execution runs as a script in this process's global scope,
 * so declarations (`let`, `const`, `function`, `class`) live on between executions, and its last
 * expression's value is its result (a promise: what it resolves to). Code with top-level `await`,
 * which no script may have, goes through Node.js's own REPL evaluation, which rewrites it so that
 * its declarations live on too.
 *
 * Protocol: executions arrive as JSON lines on the file descriptor named by `--requests`
 * (`{"code", "env_vars"}`), and each one's outcome leaves as one JSON line on `--results`:
 * `{"ok": true, "text": <util.inspect of the value, or null for undefined>}` or
 * `{"ok": false, "name", "value", "traceback"}`. What the code prints goes to stdout and stderr,
 * which the worker streams. SIGINT interrupts the running execution and the context keeps its
 * state: a script is broken off (vm's breakOnSigint), an awaited promise is given up on. (Code with
 * top-level `await` that loops without awaiting cannot be interrupted: Node's REPL evaluation, made
 * to break on SIGINT, ended the process instead, so it runs without; the worker's server replaces
 * the interpreter when such code has not stopped 10 s after the interrupt.)
 */
const fs = require("node:fs");
const net = require("node:net");
const { SourceMap } = require("node:module");
const readline = require("node:readline");
const repl = require("node:repl");
const { PassThrough } = require("node:stream");
const util = require("node:util");
const vm = require("node:vm");

function argument(name) {
  const at = process.argv.indexOf(name);
  return at >= 0 ? process.argv[at + 1] : undefined;
}

const requestsFd = Number(argument("--requests"));
const resultsFd = Number(argument("--results"));
/** The `typescript` package's lib/typescript.js, when the image has it: it parses executions' `import` declarations (rewriteImports) and strips types. */
const compilerPath = argument("--compiler");
/** A TypeScript context: each execution's types are stripped (stripTypes) first. */
const typeScript = process.argv.includes("--strip-types");
let loadedCompiler;

function compiler() {
  loadedCompiler ??= require(compilerPath);
  return loadedCompiler;
}

/** The source maps of TypeScript executions, by the name their script runs under (`<cell#N>`); the latest 1,000. */
const sourceMaps = new Map();
let typeScriptExecutions = 0;

/**
 * A TypeScript execution as JavaScript: its types removed (`transpileModule`: no type check, as
 * E2B's Deno kernel runs TypeScript), nothing else changed (ES2022, imports kept as written but
 * those of types only); `{ code, fileName }`, the name its script runs under, whose positions
 * `describe` maps back to the TypeScript's (what an enum adds or an interface removes moves lines).
 * A syntax error is thrown as the SyntaxError it is, with its line and column.
 */
function stripTypes(code) {
  const ts = compiler();
  const {
    outputText,
    sourceMapText,
    diagnostics = [],
  } = ts.transpileModule(code, {
    fileName: "cell.ts",
    reportDiagnostics: true,
    // verbatimModuleSyntax: an import a later cell uses (nothing in this one) is kept; only `import
    // type` and `type` specifiers go.
    compilerOptions: { target: ts.ScriptTarget.ES2022, module: ts.ModuleKind.Preserve, verbatimModuleSyntax: true, sourceMap: true },
  });
  const error = diagnostics.find((diagnostic) => diagnostic.category === ts.DiagnosticCategory.Error);
  if (error) {
    const message = ts.flattenDiagnosticMessageText(error.messageText, "\n");
    const where = error.file && error.start !== undefined ? error.file.getLineAndCharacterOfPosition(error.start) : undefined;
    const syntaxError = new SyntaxError(message);
    syntaxError.stack = `${where ? `<cell>:${where.line + 1}:${where.character + 1}\n` : ""}SyntaxError: ${message}`;
    throw syntaxError;
  }
  const fileName = `<cell#${++typeScriptExecutions}>`;
  sourceMaps.set(fileName, new SourceMap(JSON.parse(sourceMapText)));
  if (sourceMaps.size > 1000) sourceMaps.delete(sourceMaps.keys().next().value);
  // Sloppy, as a JavaScript execution is: "use strict" would refuse an assignment to an undeclared
  // name (its line stays, empty, as the source map counts it). The map's own comment goes.
  const javascript = outputText.replace(/^"use strict";/, "").replace(/\n\/\/# sourceMappingURL=\S*\s*$/, "\n");
  return { code: javascript, fileName };
}

/** `<cell#N>:line:column` in a stack as the TypeScript's `<cell>:line:column`. */
function typeScriptPositions(text) {
  return text.replace(/<cell#\d+>(?::(\d+)(?::(\d+))?)?/g, (found, line, column) => {
    const map = sourceMaps.get(found.split(":")[0]);
    if (!map || line === undefined) return "<cell>";
    const entry = map.findEntry(Number(line) - 1, Math.max(Number(column ?? 1) - 1, 0));
    if (entry?.originalLine === undefined) return "<cell>";
    return column === undefined ? `<cell>:${entry.originalLine + 1}` : `<cell>:${entry.originalLine + 1}:${entry.originalColumn + 1}`;
  });
}

/**
 * The code with its top-level `import` declarations, which no script may have, made into dynamic
 * imports that bind the same names, as a notebook's cell runs them: `import fs from "node:fs"` is
 * `var fs = (await import("node:fs")).default`, `import * as ns`, `import { a, b as c }` and a bare
 * `import "m"` likewise, import attributes (`with { type: "json" }`) kept. `var` so that a cell
 * run again may import again. Each one stays on its own lines (an error's line number holds), and
 * the bindings are copies, not live. Specifiers resolve as a module in the working directory would
 * (its node_modules). Code without `import`, or a context without the compiler, is left as is.
 */
function rewriteImports(code) {
  if (!compilerPath || !/\bimport\b/.test(code)) return code;
  const ts = compiler();
  const source = ts.createSourceFile("cell.js", code, ts.ScriptTarget.Latest, true, ts.ScriptKind.JS);
  let rewritten = "";
  let from = 0;
  for (const statement of source.statements) {
    if (!ts.isImportDeclaration(statement)) continue;
    const start = statement.getStart(source);
    const lines = code.slice(start, statement.end).split("\n").length - 1;
    rewritten += code.slice(from, start) + importAsStatement(ts, source, statement) + "\n".repeat(lines);
    from = statement.end;
  }
  return from === 0 ? code : rewritten + code.slice(from);
}

/** One import declaration as a statement binding its names from a dynamic import (see rewriteImports). */
function importAsStatement(ts, source, declaration) {
  const attributes = declaration.attributes ?? declaration.assertClause;
  const options = attributes
    ? `, { with: { ${attributes.elements.map((element) => `${element.name.getText(source)}: ${element.value.getText(source)}`).join(", ")} } }`
    : "";
  const load = `await import(${declaration.moduleSpecifier.getText(source)}${options})`;
  const clause = declaration.importClause;
  if (!clause) return `${load};`;
  if (clause.isTypeOnly) return "";
  const bindings = clause.namedBindings;
  if (bindings && ts.isNamespaceImport(bindings)) {
    const namespace = bindings.name.text;
    return clause.name ? `var ${namespace} = ${load}, ${clause.name.text} = ${namespace}.default;` : `var ${namespace} = ${load};`;
  }
  const names = [];
  if (clause.name) names.push(`default: ${clause.name.text}`);
  for (const element of bindings?.elements ?? []) {
    if (element.isTypeOnly) continue;
    names.push(element.propertyName ? `${element.propertyName.getText(source)}: ${element.name.text}` : element.name.text);
  }
  return names.length === 0 ? `${load};` : `var { ${names.join(", ")} } = ${load};`;
}

// Node 20 calls the main context's loader for a script's import() experimental, and says so once,
// at the first import() that uses it: one is made now, its warning to nobody, not on a run's stderr.
if (vm.constants?.USE_MAIN_CONTEXT_DEFAULT_LOADER) {
  const emitWarning = process.emitWarning;
  process.emitWarning = () => {};
  try {
    new vm.Script('import("node:vm").catch(() => {})', { importModuleDynamically: vm.constants.USE_MAIN_CONTEXT_DEFAULT_LOADER }).runInThisContext();
  } finally {
    process.emitWarning = emitWarning;
  }
}

// The REPL reads nothing and writes nowhere: executions are handed to its evaluator one by one.
const silent = new PassThrough();
silent.resume();
const server = repl.start({ input: new PassThrough(), output: silent, terminal: false, prompt: "", useGlobal: true });

/** The execution in progress: its settle function (called once). */
let current;

// An execution's own uncaught error reaches the REPL's domain, which would print it and never call
// back: it is the execution's outcome instead.
const domain = server._domain;
if (domain) {
  domain.removeAllListeners("error");
  domain.on("error", (error) => {
    if (current) current({ error });
    else process.stderr.write(`${describe(error).traceback}\n`);
  });
}

process.on("SIGINT", () => {
  // As vm's breakOnSigint says it of a script.
  if (current) current({ error: new Error("Execution was interrupted by `SIGINT`") });
});

// What fails later, outside any execution (a timer's callback, a promise nobody awaits), is
// written to stderr — the next execution's, as a notebook's kernel does — and the context lives on.
for (const event of ["uncaughtException", "unhandledRejection"]) {
  process.on(event, (error) => {
    process.stderr.write(`Uncaught ${describe(error).traceback}\n`);
  });
}

/** An error as the execution's: name, message, and the stack without Node's own frames. */
function describe(thrown) {
  // Input the REPL would wait for more of (`x = `) is the SyntaxError it is here.
  const error = thrown instanceof repl.Recoverable ? thrown.err : thrown;
  if (error instanceof Error) {
    const stack = (typeof error.stack === "string" ? error.stack : `${String(error.name)}: ${String(error.message)}`).split("\n");
    // Below the first frame of this file's, or of Node's REPL and vm, is this file's machinery.
    const end = stack.findIndex(
      (line) =>
        /^\s+at /.test(line) &&
        (line.includes(__filename) || /REPLServer|ContextifyScript|node:vm:|node:repl:|processTicksAndRejections|new Promise/.test(line)),
    );
    return { name: String(error.name), value: String(error.message), traceback: typeScriptPositions((end >= 0 ? stack.slice(0, end) : stack).join("\n")) };
  }
  const shown = `Uncaught ${inspected(error)}`;
  return { name: "Error", value: shown, traceback: shown };
}

/** util.inspect's text of a value, or what went wrong showing it (its inspect method may throw). */
function inspected(value) {
  try {
    return util.inspect(value);
  } catch (failure) {
    let why;
    try {
      why = failure instanceof Error ? failure.message : String(failure);
    } catch {
      why = "an error";
    }
    return `<a value that cannot be shown: ${why}>`;
  }
}

function evaluate(code, fileName) {
  return new Promise((resolve) => {
    let settled = false;
    current = (outcome) => {
      if (settled) return;
      settled = true;
      current = undefined;
      resolve(outcome);
    };
    const settle = current;
    const settleValue = (value) => {
      if (value instanceof Promise)
        value.then(
          (resolved) => settle({ value: resolved }),
          (error) => settle({ error }),
        );
      else settle({ value });
    };
    const script = compile(code, fileName);
    if (script === undefined) {
      // Top-level await, or a syntax error, which the REPL's evaluation reports as such.
      try {
        // The REPL calls back with null for no error: a thrown 0, "" or false is an error too.
        server.eval(code, server.context, fileName, (error, value) => (error !== null && error !== undefined ? settle({ error }) : settleValue(value)));
      } catch (error) {
        settle({ error });
      }
      return;
    }
    try {
      settleValue(script.runInThisContext({ breakOnSigint: true, displayErrors: false }));
    } catch (error) {
      settle({ error });
    }
  });
}

/** The code as a script; undefined when it is none (top-level await, a syntax error). */
function compile(code, fileName) {
  // `{ a: 1 }` is an object, as in Node's REPL, when it reads as one.
  const candidates = /^\s*\{/.test(code) && /\}\s*$/.test(code) ? [`(${code}\n)`, code] : [code];
  for (const source of candidates) {
    try {
      // import() resolves as in the REPL's evaluation (the working directory's modules).
      return new vm.Script(source, { filename: fileName, importModuleDynamically: vm.constants?.USE_MAIN_CONTEXT_DEFAULT_LOADER });
    } catch (error) {
      if (!(error instanceof SyntaxError)) throw error;
    }
  }
  return undefined;
}

// The pipes as libuv's own (non-blocking) handles: a file stream's read would hold a thread of the
// pool in read(2), and process.exit() waits for it — until the next request.
const results = new net.Socket({ fd: resultsFd, readable: false, writable: true });
const requests = readline.createInterface({ input: new net.Socket({ fd: requestsFd, readable: true, writable: false }), crlfDelay: Infinity });
let queue = Promise.resolve();

/** Once what was written to `stream` so far is out (a pipe the worker reads may have made it wait). */
function written(stream) {
  return new Promise((resolve) => stream.write("", () => resolve()));
}

/** The outcome as its answer: the error's, or the value's text (what cannot be shown is an error too). */
function answerOf(outcome) {
  if ("error" in outcome) return { ok: false, ...describe(outcome.error) };
  if (outcome.value === undefined) return { ok: true, text: null };
  try {
    return { ok: true, text: util.inspect(outcome.value) };
  } catch (failure) {
    return { ok: false, ...describe(failure) };
  }
}

requests.on("line", (line) => {
  queue = queue
    .then(() => serve(line))
    .catch((failure) => {
      // Whatever went wrong, the request gets an answer: the worker waits for one.
      let answer;
      try {
        answer = JSON.stringify({ ok: false, name: "Error", value: `the context could not answer: ${inspected(failure)}`, traceback: "" });
      } catch {
        answer = '{"ok": false, "name": "Error", "value": "the context could not answer", "traceback": ""}';
      }
      results.write(`${answer}\n`);
    });
});

async function serve(line) {
  const request = JSON.parse(line);
  // A run's env_vars apply to that run: afterwards those names get their values back (or go);
  // what the code itself sets in process.env stays.
  const envVars = request.env_vars ?? {};
  const before = Object.fromEntries(Object.keys(envVars).map((name) => [name, process.env[name]]));
  Object.assign(process.env, envVars);
  let outcome;
  try {
    const code = String(request.code ?? "");
    const script = typeScript ? stripTypes(code) : { code, fileName: "<cell>" };
    outcome = await evaluate(rewriteImports(script.code), script.fileName);
  } catch (error) {
    outcome = { error };
  }
  for (const [name, old] of Object.entries(before)) {
    if (process.env[name] !== String(envVars[name])) continue;
    if (old === undefined) delete process.env[name];
    else process.env[name] = old;
  }
  let answer;
  try {
    answer = JSON.stringify(answerOf(outcome));
  } catch (failure) {
    answer = JSON.stringify({ ok: false, ...describe(failure) });
  }
  // What the code printed goes before its outcome, in the worker's order.
  await Promise.all([written(process.stdout), written(process.stderr)]);
  results.write(`${answer}\n`);
}
requests.on("close", () => process.exit(0));
