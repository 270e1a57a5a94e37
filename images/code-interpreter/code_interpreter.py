#!/usr/bin/env python3
"""Fast Sandbox's code interpreter: E2B's code-interpreter API, served inside a sandbox.

E2B's code-interpreter SDKs (PyPI `e2b-code-interpreter`, npm `@e2b/code-interpreter`) run code
through a server on port 49999 of the sandbox, which Fast Sandbox's sandbox proxy reaches like any
other port of a sandbox made through the E2B-compatible API. This is that server, written from the
SDKs' wire contract, on Python's standard library alone (3.8 or newer), so any image with a
`python3` can run it:

- ``POST /execute`` ``{"code", "context_id"?, "language"?, "env_vars"?}``: runs the code in a
  context (by default the one of its language) and answers a stream of JSON lines, each written as
  it happens: ``stdout`` / ``stderr`` (``text``, ``timestamp``; what is printed without a newline
  within 0.2 s), ``result`` (the value of the code's last expression unless it ends with ``;``,
  ``is_main_result``, and what ``display(obj)`` shows: ``text`` always,
  ``html``/``markdown``/``svg``/``png``/``jpeg``/``pdf``/``latex``/``json`` when the object renders
  so, as IPython's ``_repr_mimebundle_`` and ``_repr_*_`` methods say), ``error`` (``name``, ``value``, ``traceback``),
  ``number_of_executions`` (``execution_count``), then ``end_of_execution``.
- ``POST /contexts`` ``{"language"?, "cwd"?}``, ``GET /contexts``, ``DELETE /contexts/{id}``,
  ``POST /contexts/{id}/restart``: contexts are independent interpreters; variables, imports and
  functions live on between executions of the same context, never across contexts.
- ``GET /health``: 200 once it listens.

A context is a Python process of its own (this file with ``--worker``): the code runs in its main
thread; what it prints, and what processes it starts write to their stdout and stderr, is streamed
back (file descriptors 1 and 2 are pipes the worker reads). Executions of one context run one at a
time, in order; contexts run in parallel. An execution whose client went away (the SDK's timeout)
is interrupted (SIGINT: KeyboardInterrupt in the code), or not run at all when it was still waiting
for its context. A worker that dies is reported as the
execution's error, and a new one starts with the next execution. Stopping a context (restart,
removal, code that ignores an interrupt) kills its worker's whole session: what its code started too.
Python runs may use IPython's ``!command`` lines (``files = !ls`` too), ``%pip``, ``%cd``,
``%matplotlib`` and ``%%bash`` (see _with_magics), IPython's other magics when the image has IPython
(see _Worker.magic), and top-level ``await``. When the image's Python has matplotlib, its figures are results (``png``, ``text``, and the data
they draw as E2B's ``chart``: see _chart), as IPython's inline backend shows them: see _InlineFigures.

Languages: ``python`` (also ``python3``, ``py``) and ``bash`` (also ``sh``, ``shell``; when the
image has a bash): a bash context is one interactive bash fed each execution as a file it sources,
so variables, functions, the working directory and exports live on; a run's ``env_vars`` are that
run's alone; a last command that fails is the execution's error ``CommandExitError`` (``exit status
N``); an interrupt ends the running command line and keeps the shell; ``exit`` ends the context (the
next execution starts a new shell). ``javascript`` (also ``js``, ``node``, ``nodejs``; when the image
has a node and javascript_context.cjs lies beside this file): a Node.js process per context
(javascript_context.cjs), with declarations kept between executions, top-level ``await``, the last
expression's value (a promise's, resolved) as the result in ``util.inspect``'s text, the
error's name, message and stack, and ``import`` declarations made dynamic imports (with
typescript.js beside this file). ``typescript`` (also ``ts``; when typescript.js, the
``typescript`` package's compiler, lies beside this file too): a JavaScript context whose
executions have their types stripped first (no type check). ``r`` (also ``R``; when the image has R's
``Rscript`` and r_context.R lies beside this file): an R process per context (r_context.R), each
top-level expression evaluated in the global environment as the R console does: every visible value
a result in print()'s text (the last one the main result; a data frame's or a matrix's also an
HTML table), warnings and messages on stderr, an error named ``Error`` (or its condition's class)
with R's own text and calls as its traceback; plots are ``png`` results (R's default device is a
PNG file per page when R has cairo). ``java``: a JVM per context running JavaContext (JShell, its
code run in that JVM): variables, methods, classes and imports live on, the last snippet's value
when it is an expression is the result as JShell shows it, a compile error is
``CompilationException``, an exception is named by its class with jshell's stack trace. Another
language is refused with 400.

Usage: ``python3 code_interpreter.py [--port 49999] [--host 0.0.0.0] [--cwd DIR] [--user NAME]``.
The code runs as E2B's account ``user`` when the image has one (``--user root``: as the server, so
as root), with its HOME; the default working directory is ``/home/user`` when it exists (E2B's),
else ``$HOME``, else ``/``.
"""

import socket
import sys


def _listen(host, port):
    # Bound before anything else is imported: the port accepts connections (its backlog holds them)
    # within the interpreter's start-up.
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    server = socket.socket(family, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((host, port))
    server.listen(128)
    return server


def _argument(name, default):
    if name in sys.argv:
        index = sys.argv.index(name)
        if index + 1 < len(sys.argv):
            return sys.argv[index + 1]
    return default


if __name__ == "__main__" and "--worker" not in sys.argv:
    _LISTENING = _listen(_argument("--host", "0.0.0.0"), int(_argument("--port", "49999")))

import ast  # noqa: E402
import base64  # noqa: E402
import codecs  # noqa: E402
import datetime  # noqa: E402
import http.server  # noqa: E402
import importlib.machinery  # noqa: E402
import importlib.util  # noqa: E402
import inspect  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import linecache  # noqa: E402
import os  # noqa: E402
import pwd  # noqa: E402
import re  # noqa: E402
import select  # noqa: E402
import selectors  # noqa: E402
import shlex  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import tokenize  # noqa: E402
import traceback  # noqa: E402
import types  # noqa: E402
import uuid  # noqa: E402

# bash contexts need a bash in the image, JavaScript ones a node and javascript_context.cjs beside
# this file (Fast Sandbox's image has Debian's bash and node).
_HERE = os.path.dirname(os.path.abspath(__file__))
BASH = shutil.which("bash")
NODE = shutil.which("node")
JAVASCRIPT_CONTEXT = os.path.join(_HERE, "javascript_context.cjs")
# The `typescript` package's compiler: TypeScript contexts strip types with it, and JavaScript ones
# parse `import` declarations (made dynamic imports) with it.
TYPESCRIPT = os.path.join(_HERE, "typescript.js")
_JAVASCRIPT = NODE is not None and os.path.isfile(JAVASCRIPT_CONTEXT)
# R contexts need R's Rscript and r_context.R beside this file (Fast Sandbox's image has Debian's R).
RSCRIPT = shutil.which("Rscript")
R_CONTEXT = os.path.join(_HERE, "r_context.R")
# Java contexts need a java with the jdk.jshell module and JavaContext beside this file: compiled
# (java/JavaContext.class, as the image has it) or as its source (run by java's source launcher).
JAVA = shutil.which("java")
JAVA_CONTEXT = (
    ["-cp", os.path.join(_HERE, "java"), "JavaContext"]
    if os.path.isfile(os.path.join(_HERE, "java", "JavaContext.class"))
    else [os.path.join(_HERE, "JavaContext.java")]
    if os.path.isfile(os.path.join(_HERE, "JavaContext.java"))
    else None
)
LANGUAGES = (
    ("python",)
    + (("bash",) if BASH else ())
    + (("javascript",) if _JAVASCRIPT else ())
    + (("typescript",) if _JAVASCRIPT and os.path.isfile(TYPESCRIPT) else ())
    + (("r",) if RSCRIPT is not None and os.path.isfile(R_CONTEXT) else ())
    + (("java",) if JAVA is not None and JAVA_CONTEXT is not None else ())
)
MAX_REQUEST_BYTES = 16 << 20
INTERRUPT_GRACE_S = 10
# How long an execution waits for its output to be sent once the code is done (as long as a client reads).
SYNC_TIMEOUT_S = 30


def _now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat().replace("+00:00", "Z")


# --- the worker: one context's interpreter -----------------------------------------------------


class _Worker:
    """Runs executions read from `requests` and writes their events to `events` (JSON lines)."""

    # A marker written to fds 1 and 2 after an execution: `SYNC<number>\x00`, a number per sync, so a
    # marker that arrives late never releases a later sync; SYNC has a part random per worker, so
    # output cannot forge one.
    SYNC = b"\x00fsb-code-interpreter-sync-" + uuid.uuid4().hex.encode("ascii") + b"-"

    def __init__(self, requests_fd, events_fd):
        # Not inherited by what the code starts: a child holding them would keep a dead worker's events open.
        os.set_inheritable(requests_fd, False)
        os.set_inheritable(events_fd, False)
        # Buffered: a request is read a buffer at a time, not a byte per read (it may be megabytes of code).
        self.requests = os.fdopen(requests_fd, "rb")
        # Buffered, flushed per event: a write cut short by an interrupt keeps the rest of its line
        # for the next flush, so the server never reads half a line.
        self.events = os.fdopen(events_fd, "wb")
        self.events_lock = threading.Lock()
        # The code runs in a module registered as __main__ (as in IPython): pickle and multiprocessing
        # find what a cell defines.
        main = types.ModuleType("__main__")
        main.__dict__["display"] = self.display_objects
        main.__dict__[_MAGIC] = self.magic
        self.ipython_shell = None
        sys.modules["__main__"] = main
        self.namespace = main.__dict__
        # matplotlib's figures are shown as results (see _InlineFigures); the ids of those this
        # execution showed.
        self.figures = _InlineFigures(self)
        self.figures_shown = set()
        # asyncio's loop for runs with top-level await (see evaluate), made by the first one.
        self.loop = None
        self.sync_number = 0
        # The server's SIGINT interrupts what runs for an execution (KeyboardInterrupt), and nothing else.
        self.running = False
        signal.signal(signal.SIGINT, self.on_interrupt)
        self.synced = {1: threading.Condition(), 2: threading.Condition()}
        self.seen = {1: 0, 2: 0}
        # fds 1 and 2 become pipes this process reads: print() and child processes alike are streamed.
        self.pipes = {}
        for fd, kind in ((1, "stdout"), (2, "stderr")):
            read_end, write_end = os.pipe()
            os.dup2(write_end, fd)
            os.close(write_end)
            self.pipes[fd] = _identity_of(fd)
            threading.Thread(target=self.pump, args=(read_end, fd, kind), daemon=True).start()
        sys.stdout = open(1, "w", encoding="utf-8", errors="replace", buffering=1, closefd=False)
        sys.stderr = open(2, "w", encoding="utf-8", errors="replace", buffering=1, closefd=False)
        # What the code prints without a newline (a progress bar's `\r`, a prompt) is streamed too:
        # these streams are flushed every FLUSH_INTERVAL_S while it runs, as ipykernel's are. A fork
        # waits for a flush to end (and none starts during one): the child's streams are never left locked.
        self.streams = (sys.stdout, sys.stderr)
        self.flushing = threading.Lock()
        os.register_at_fork(before=self.flushing.acquire, after_in_parent=self.flushing.release, after_in_child=self.flushing.release)
        threading.Thread(target=self.flush_periodically, daemon=True).start()
        stdin = os.open(os.devnull, os.O_RDONLY)
        os.dup2(stdin, 0)
        os.close(stdin)

    FLUSH_INTERVAL_S = 0.2

    def flush_periodically(self):
        while True:
            time.sleep(self.FLUSH_INTERVAL_S)
            if not self.running:
                continue
            with self.flushing:
                for stream in self.streams:
                    try:
                        stream.flush()
                    except (OSError, ValueError):
                        pass  # the code closed it

    def emit(self, event):
        line = (json.dumps(event) + "\n").encode("utf-8")
        with self.events_lock:
            self.events.write(line)
            self.events.flush()

    def pump(self, fd, number, kind):
        """Streams what is written to fd `number` as `kind` events; a SYNC marker in it releases sync_output."""
        pending = b""
        # UTF-8 decoded as it comes: a character cut between reads waits for its end, bytes that are
        # no UTF-8 are U+FFFD (and do not hold back the text after them).
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                self.send_text(kind, decoder.decode(pending, final=True))
                return
            pending += chunk
            while True:
                at = pending.find(self.SYNC)
                end = pending.find(b"\x00", at + len(self.SYNC)) if at >= 0 else -1
                if end < 0:
                    break
                marker = pending[at + len(self.SYNC) : end]
                if not marker.isdigit() or len(marker) > 18:
                    # Output that only looks like a marker's start: text, like the rest.
                    self.send_text(kind, decoder.decode(pending[: at + len(self.SYNC)]))
                    pending = pending[at + len(self.SYNC) :]
                    continue
                # The execution's output ends here: a character cut short by it is U+FFFD.
                self.send_text(kind, decoder.decode(pending[:at], final=True))
                decoder.reset()
                pending = pending[end + 1 :]
                with self.synced[number]:
                    self.seen[number] = max(self.seen[number], int(marker))
                    self.synced[number].notify_all()
            # What could be the start of a marker (or a marker without its end) waits for the next
            # read (the decoder keeps a UTF-8 sequence's start).
            at = pending.find(self.SYNC)
            if at >= 0:
                keep = len(pending) - at
            else:
                keep = next((size for size in range(min(len(self.SYNC) - 1, len(pending)), 0, -1) if self.SYNC.startswith(pending[-size:])), 0)
            self.send_text(kind, decoder.decode(pending[: len(pending) - keep]))
            pending = pending[len(pending) - keep :]

    def send_text(self, kind, text):
        if text:
            self.emit({"type": kind, "text": text, "timestamp": _now()})

    def sync_output(self):
        """Waits until everything the code wrote to fds 1 and 2 so far was emitted (the server reads
        events as long as the execution lasts, so this ends)."""
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass  # the code closed or replaced it
        self.sync_number += 1
        marker = self.SYNC + str(self.sync_number).encode("ascii") + b"\x00"
        written = []
        for fd, inode in self.pipes.items():
            try:
                # The code may have pointed fd 1 or 2 elsewhere (or closed it): then nothing of it is ours to wait for.
                if _identity_of(fd) != inode:
                    continue
                os.write(fd, marker)
                written.append(fd)
            except OSError:
                continue
        for fd in written:
            with self.synced[fd]:
                self.synced[fd].wait_for(lambda fd=fd: self.seen[fd] >= self.sync_number, timeout=SYNC_TIMEOUT_S)

    def display_objects(self, *objects, **options):
        """The code's ``display()`` (and IPython.display's): each object a result of the execution
        (IPython's options, such as ``display_id`` or ``raw``, mean nothing here)."""
        for value in objects:
            self.display(value)

    def use_display(self, module):
        """IPython (when the image has it) just loaded one of its modules with display(): ours."""
        module.display = self.display_objects

    def display(self, value, is_main_result=False):
        """Shows `value` as a result of the execution (as IPython's display())."""
        self.emit(dict(_representations(value), type="result", is_main_result=is_main_result))
        if _is_figure(value):
            self.figures_shown.add(id(value))

    def run(self):
        count = 0
        for line in self.requests:
            count += 1
            try:
                self.run_request(json.loads(line), count)
            except Exception as failure:  # noqa: BLE001 - this file's failure, not the code's: the execution's error, the context lives on
                self.emit({"type": "error", "name": _error_name(failure), "value": "the code interpreter failed: %s" % _error_value(failure), "traceback": ""})
            finally:
                # Always: the server waits for `done` to end the execution.
                self.emit({"type": "number_of_executions", "execution_count": count})
                self.emit({"type": "done"})

    def run_request(self, request, count):
        """Runs one execution and emits its results and error (but not its end: see run)."""
        # A run's env_vars apply to that run: afterwards those names get their values back (or go);
        # what the code itself sets in os.environ stays, as in a notebook.
        env_vars = {str(k): str(v) for k, v in (request.get("env_vars") or {}).items()}
        invalid = _invalid_env_var(env_vars)
        if invalid is not None:
            # Refused before anything ran: an environment cannot hold it.
            env_vars = {}
        before = {name: os.environ.get(name) for name in env_vars}
        os.environ.update(env_vars)
        self.env_vars = env_vars
        self.figures_shown = set()
        try:
            if invalid is not None:
                value, error = None, invalid
            else:
                try:
                    value, error = self.interruptible(request.get("code", ""), "<cell %d>" % count)
                except KeyboardInterrupt as interrupted:  # one that came at the edge of the execution
                    value, error = None, interrupted
            if error is None and value is not None:
                try:
                    self.display(value, is_main_result=True)
                except Exception as failure:  # noqa: BLE001 - a result that cannot be shown is the execution's error
                    error = failure
            if error is not None:
                self.emit(self.error_event(error))
        finally:
            for name, old in before.items():
                if os.environ.get(name) != env_vars[name]:
                    continue  # the code changed it: its value stays
                if old is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = old

    def error_event(self, error):
        """An execution's error as its event; an error whose ``__str__`` (or whose class's name)
        fails is shown as traceback.format_exception_only shows it."""
        try:
            traceback_text = "".join(_user_traceback(error))
        except Exception:  # noqa: BLE001 - a traceback this cannot read: the error without it
            traceback_text = ""
        return {"type": "error", "name": _error_name(error), "value": _error_value(error), "traceback": traceback_text}

    def on_interrupt(self, signum, frame):
        if self.running:
            raise KeyboardInterrupt

    def interruptible(self, code, filename):
        """Runs the code, then waits for its output to be sent, with the server's SIGINT as
        KeyboardInterrupt: (value, error)."""
        try:
            self.running = True
            try:
                value, error = self.execute(code, filename), None
                # The figures the code left open, as IPython's inline backend shows them at a
                # cell's end (but the one that is the result: that one is shown as the result).
                self.figures.flush(keep=value)
            except BaseException as failure:  # noqa: BLE001 - the code's errors, KeyboardInterrupt and SystemExit included, are the execution's
                value, error = None, failure
                # A failing (or interrupted) cell's figures are its own too, as IPython's inline
                # backend shows them (after the cell, whatever its end): never the next cell's.
                try:
                    self.figures.flush()
                except BaseException:  # noqa: BLE001 - one that cannot be drawn (or a second interrupt) is left out
                    pass
            try:
                self.sync_output()
            except KeyboardInterrupt as interrupted:
                error = error or interrupted
            return value, error
        finally:
            self.running = False

    def execute(self, code, filename):
        # The source is kept under the cell's name so tracebacks (now and later) show its lines.
        linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
        source = code
        try:
            tree = ast.parse(code, filename, "exec")
        except SyntaxError as error:
            # IPython's `!command` and magics, as calls on the same lines (code that is Python as
            # it is never gets here).
            with_magics = _with_magics(code)
            try:
                tree = ast.parse(with_magics, filename, "exec") if with_magics != code else None
                source = with_magics
            except SyntaxError:
                tree = None
            if tree is None:
                # The code's error alone (without the parser's frames), as IPython shows it.
                raise error.with_traceback(None) from None
        last = None
        quiet = False
        if tree.body and isinstance(tree.body[-1], ast.Expr):
            last = ast.Expression(tree.body.pop().value)
            quiet = _ends_with_semicolon(source)
        if "asyncio" in sys.modules:
            self.event_loop()  # the current one for this run's code too (an asyncio.run() leaves none)
        self.evaluate(compile(tree, filename, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT))
        if last is not None:
            value = self.evaluate(compile(last, filename, "eval", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT))
            # `x;`: evaluated, not shown (as in IPython); a figure it is is shown as an open one.
            return None if quiet else value
        return None

    def evaluate(self, code):
        """Runs compiled code in the namespace: its value. Code with top-level ``await`` (``async
        for``, ``async with``), as IPython's autoawait allows, is a coroutine run to its end on this
        context's event loop (asyncio's current one: tasks it starts run on while a later run awaits)."""
        if not code.co_flags & inspect.CO_COROUTINE:
            return eval(code, self.namespace)  # noqa: S307 - running the user's code is the point
        loop = self.event_loop()
        task = loop.create_task(eval(code, self.namespace))  # noqa: S307
        try:
            return loop.run_until_complete(task)
        except BaseException:
            # Interrupted (or the loop stopped): the coroutine is cancelled and given the chance to
            # clean up, so the loop is free for the next run.
            if not task.done():
                task.cancel()
                try:
                    loop.run_until_complete(task)
                except BaseException:  # noqa: BLE001 - the first error is the execution's
                    pass
            raise

    def magic(self, kind, line, body=None, capture=False):
        """A shell command (``!ls``) or magic (``%pip install x``, ``%%bash``) of the code, as
        IPython runs them: what they print is the execution's output, a command's exit status is
        not an error (IPython's neither). ``capture`` (``files = !ls``): a command's output (stdout
        and stderr) is the value, as a list of its lines, instead. A magic this file does not have
        itself is IPython's (``%timeit``, ``%%writefile``, ``%env``…) when the image has IPython."""
        caller = sys._getframe(1).f_locals  # the code's: `{n}` in a function's `!` line is its n
        if kind == "!":
            command = self.expand(line, caller)
            return self.output_of(command) if capture else self.shell(command)
        name, _, raw = line.strip().partition(" ")
        arguments = self.expand(raw.strip(), caller)
        if kind == "%%":
            if name in ("bash", "sh"):
                return self.shell(body, executable=BASH if name == "bash" and BASH else "/bin/sh")
            shell = self.ipython()
            if shell is None or shell.find_cell_magic(name) is None:
                raise UsageError("Cell magic `%%%%%s` not found." % name)
            # IPython expands the line itself, in the code's frame (2 above run_cell_magic's).
            return shell.run_cell_magic(name, raw.strip(), body)
        if name == "pip":
            self.shell("%s -m pip %s" % (shlex.quote(sys.executable), arguments))
            importlib.invalidate_caches()  # what it installed imports now
            return None
        if name == "matplotlib":
            return None  # figures are shown as results already (_InlineFigures)
        if name == "cd":
            os.chdir(os.path.expanduser(arguments or "~"))
            print(os.getcwd())
            return None
        shell = self.ipython()
        if shell is None or shell.find_line_magic(name) is None:
            raise UsageError("Line magic function `%%%s` not found." % name)
        # The code's frame is 2 above run_line_magic's caller (this method): IPython expands the
        # line there and gives it to the magics that take the local scope (%time, %timeit).
        return shell.run_line_magic(name, raw.strip(), _stack_depth=2)

    def ipython(self):
        """IPython's shell over this context's namespace, made when a magic first needs it (its
        ``get_ipython()`` is this shell from then on); None when the image has no IPython."""
        if self.ipython_shell is None:
            try:
                from IPython.core.interactiveshell import InteractiveShell
                from traitlets.config import Config
            except ImportError:
                return None
            config = Config()
            config.HistoryManager.enabled = False  # no history database in the user's home
            self.ipython_shell = InteractiveShell.instance(config=config, user_module=sys.modules["__main__"])
            # The namespace's display() stays the context's (IPython puts its own among the builtins).
            self.namespace["display"] = self.display_objects
        return self.ipython_shell

    def expand(self, command, local_names=None):
        """``{expression}`` and ``$name`` in a command line replaced by their values, as IPython
        does (``$$`` is ``$``); one that does not evaluate (the shell's ``$HOME``, awk's ``{ print
        $1 }``) is left as it is."""
        names = self.namespace
        if local_names is not None and local_names is not self.namespace:
            names = dict(self.namespace, **local_names)

        def value(found):
            if found.group(0) == "$$":
                return "$"
            try:
                return str(eval(found.group(1) or found.group(2), names))  # noqa: S307 - the user's own expression
            except Exception:  # noqa: BLE001 - not a name or expression of the code: the shell's
                return found.group(0)

        return _EXPANSION.sub(value, command)

    def output_of(self, command):
        """What a shell command line writes (stdout and stderr), as IPython's ``getoutput``: a list
        of its lines (IPython's SList, with ``.s``, ``.n``, ``.grep()``…, when the image has it)."""
        done = subprocess.run(command, shell=True, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # noqa: S602
        lines = done.stdout.decode("utf-8", errors="replace").splitlines()
        try:
            from IPython.utils.text import SList
        except ImportError:
            return lines
        return SList(lines)

    def shell(self, command, executable=None):
        """Runs a shell command line with the code's output streams; interrupted with the code."""
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        subprocess.run(command, shell=True, executable=executable, stdin=subprocess.DEVNULL)  # noqa: S602 - the user's command is the point
        return None

    def event_loop(self):
        """This context's asyncio loop (made when first needed: asyncio is imported then), made
        asyncio's current one, so what a run without await schedules runs when a later one awaits."""
        import asyncio

        if self.loop is None or self.loop.is_closed():
            self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        return self.loop


class CommandExitError(Exception):
    """A bash execution whose last command exited with a status other than 0 (E2B's name for a command's)."""

    def __init__(self, status):
        super().__init__("exit status %d" % status)
        self.status = status


# What a bash context's shell runs first, read from its stdin like every command after it: no
# prompts, history or history expansion; its stderr becomes the worker's (pumped) from here on;
# `__fsb_run FILE` sources an execution's file with stdin from /dev/null and without the status pipe,
# and the prompt command writes each command line's status to that pipe — also after an interrupt,
# which ends an interactive shell's command line, not the shell. Both are read-only: code cannot
# unhook the worker.
_SHELL_SETUP = """set +H +o history
unset HISTFILE
PS1= PS2= PS0=
exec 2>&{stderr} {stderr}>&-
__fsb_run() {{ {{ . "$1"; }} </dev/null {status}>&-; }}
readonly -f __fsb_run
PROMPT_COMMAND='printf "%s\\n" "$?" >&{status}'; readonly PROMPT_COMMAND
"""

_SHELL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


class _ShellWorker(_Worker):
    """A bash context: one interactive bash (so an interrupt ends the running command line, not the
    shell), given each execution as a file it sources. Its variables, functions, working directory
    and exports live on between executions; a run's env_vars are that run's alone (assignments
    before the `.`). What bash and what it starts write to stdout and stderr is streamed as in a
    Python context. A last status other than 0 is the execution's error (CommandExitError). An
    `exit` ends the shell, and with it this worker (the server says so; the next run starts anew)."""

    def __init__(self, requests_fd, events_fd):
        super().__init__(requests_fd, events_fd)
        self.env_vars = {}
        self.interrupted = False
        self.cells = tempfile.mkdtemp(prefix="fsb-bash-")
        status_read, status_write = os.pipe()
        commands_read, commands_write = os.pipe()
        stderr = os.dup(2)
        try:
            # A process group of its own: an interrupt reaches the shell and the command it waits for.
            self.shell = subprocess.Popen(
                [BASH, "--noprofile", "--norc", "--noediting", "+m", "-i"],
                stdin=commands_read,
                stderr=subprocess.DEVNULL,  # its start-up's "no job control" notice; the setup gives it fd 2 back
                pass_fds=(status_write, stderr),
                # Python 3.11's own setpgid; before it, a preexec_fn (this process has threads by now).
                **({"process_group": 0} if sys.version_info >= (3, 11) else {"preexec_fn": os.setpgrp}),
            )
        finally:
            os.close(commands_read)
            os.close(status_write)
            os.close(stderr)
        self.commands = os.fdopen(commands_write, "wb", buffering=0)
        self.statuses = os.fdopen(status_read, "rb")
        self.commands.write(_SHELL_SETUP.format(stderr=stderr, status=status_write).encode("utf-8"))
        self.status()

    def status(self):
        """The next command line's exit status; None once the shell is gone."""
        line = self.statuses.readline()
        return int(line) if line.strip().isdigit() else None

    def on_interrupt(self, signum, frame):
        if self.running:
            self.interrupted = True
            try:
                os.killpg(self.shell.pid, signal.SIGINT)
            except OSError:
                pass

    def execute(self, code, filename):
        for name in self.env_vars:
            if not _SHELL_NAME.match(name):
                raise ValueError("env var name %r is not a shell variable's name (letters, digits and _, not first a digit)" % name)
        cell = os.path.join(self.cells, "cell")
        with open(cell, "w", encoding="utf-8") as file:
            file.write(code)
            if not code.endswith("\n"):
                file.write("\n")
        assignments = "".join("%s=%s " % (name, shlex.quote(value)) for name, value in self.env_vars.items())
        self.interrupted = False
        self.commands.write(("%s__fsb_run %s\n" % (assignments, shlex.quote(cell))).encode("utf-8"))
        status = self.status()
        if status is None:
            # `exit`, or killed: this worker goes with its shell once the output is out.
            self.sync_output()
            os._exit(self.shell.wait() & 0xFF)
        if status != 0:
            if self.interrupted and status == 130:
                raise KeyboardInterrupt()
            raise CommandExitError(status)
        return None


class _Shown:
    """A value shown as the text another interpreter gave (its repr is that text), and the HTML it
    gave, if any."""

    def __init__(self, text, html=None):
        self.text = text
        self.html = html

    def __repr__(self):
        return self.text

    def _repr_html_(self):
        return self.html


class _PngFile:
    """A plot another interpreter drew into a PNG file: shown as ``png`` (the file is removed once read)."""

    def __init__(self, path):
        with open(path, "rb") as file:
            self.png = file.read()
        os.unlink(path)

    def __repr__(self):
        return "plot without title"

    def _repr_png_(self):
        return self.png


def _invalid_env_var(env_vars):
    """A ValueError naming the first env var no environment can hold, or None."""
    for name, value in env_vars.items():
        if not name or "=" in name or "\0" in name or "\0" in value:
            return ValueError("env var %r cannot be set: a name must be non-empty, without '=' or NUL, and a value without NUL" % name)
        try:
            os.fsencode(name)
            os.fsencode(value)
        except UnicodeError:
            return ValueError("env var %r cannot be set: it holds characters UTF-8 cannot encode (a lone surrogate)" % name)
    return None


class _ForeignError(Exception):
    """An error another interpreter reported: its own name, value and traceback."""

    def __init__(self, name, value, traceback_text):
        super().__init__(value)
        self.event = {"type": "error", "name": name, "value": value, "traceback": traceback_text}


class _ChildResults:
    """The reading end of a child interpreter's results pipe. A wait for its next bytes ends when
    the child exits, even while a process the child started (R's ``system("… &")``) still holds
    the pipe's writing end, which the child passed on: then what is left reads as the end."""

    POLL_S = 0.25

    def __init__(self, fd, child):
        self.fd = fd
        self.child = child
        self.buffer = bytearray()

    def fill(self):
        """Reads what the pipe has into the buffer, waiting for it; False at the end."""
        while True:
            readable, _, _ = select.select([self.fd], [], [], self.POLL_S)
            if not readable and self.child.poll() is None:
                continue
            if not readable:
                # Exited: what it wrote before is in the pipe already.
                readable, _, _ = select.select([self.fd], [], [], 0)
                if not readable:
                    return False
            chunk = os.read(self.fd, 65536)
            self.buffer += chunk
            return bool(chunk)

    def readline(self):
        """The next line with its newline; what is left without one at the end."""
        searched = 0
        end = self.buffer.find(b"\n")
        while end < 0:
            # Only what came since is searched again: a line may be megabytes long.
            searched = len(self.buffer)
            if not self.fill():
                break
            end = self.buffer.find(b"\n", searched)
        size = end + 1 if end >= 0 else len(self.buffer)
        line = bytes(self.buffer[:size])
        del self.buffer[:size]
        return line

    def read(self, size):
        """The next `size` bytes; fewer at the end."""
        while len(self.buffer) < size and self.fill():
            pass
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        return data


class _ChildWorker(_Worker):
    """A context whose code another interpreter runs, as this worker's child (`self.child`, started
    with `command()`, given the ends of two pipes: its requests and its results): what it prints is
    streamed as in a Python context, an interrupt is its SIGINT, and its errors are its own."""

    def __init__(self, requests_fd, events_fd):
        super().__init__(requests_fd, events_fd)
        self.env_vars = {}
        # The child runs a request from its sending to its outcome: only then does an interrupt
        # go to it (one between runs would hit the next run, or an interpreter waiting for it).
        self.child_running = False
        child_requests, self_requests = os.pipe()
        self_results, child_results = os.pipe()
        try:
            self.child = subprocess.Popen(
                self.command(str(child_requests), str(child_results)),
                stdin=subprocess.DEVNULL,
                pass_fds=(child_requests, child_results),
            )
        finally:
            os.close(child_requests)
            os.close(child_results)
        self.to_child = os.fdopen(self_requests, "wb", buffering=0)
        self.from_child = _ChildResults(self_results, self.child)

    def command(self, requests_fd, results_fd):
        raise NotImplementedError

    def interruptible(self, code, filename):
        self.child_running = True
        try:
            return super().interruptible(code, filename)
        finally:
            self.child_running = False

    def answered(self):
        """The child sent its run's outcome: interrupts no longer go to it."""
        self.child_running = False

    def on_interrupt(self, signum, frame):
        if self.running and self.child_running:
            try:
                self.child.send_signal(signal.SIGINT)
            except OSError:
                pass

    def error_event(self, error):
        if isinstance(error, _ForeignError):
            return error.event
        return super().error_event(error)

    def child_gone(self):
        """The interpreter is gone, or no longer to be trusted (it broke the protocol): this worker
        goes with it once the output is out."""
        if self.child.poll() is None:
            self.child.kill()
        self.sync_output()
        os._exit(self.child.wait() & 0xFF)


class _JavaScriptWorker(_ChildWorker):
    """A JavaScript context: one Node.js process running javascript_context.cjs (Node's REPL
    evaluation: top-level await, declarations kept between executions, the last expression's value
    as the result), answering each execution with a JSON line."""

    def command(self, requests_fd, results_fd):
        return (
            [NODE, JAVASCRIPT_CONTEXT, "--requests", requests_fd, "--results", results_fd]
            + (["--compiler", TYPESCRIPT] if os.path.isfile(TYPESCRIPT) else [])
            + (["--strip-types"] if _argument("--language", "") == "typescript" else [])
        )

    def execute(self, code, filename):
        try:
            self.to_child.write((json.dumps({"code": code, "env_vars": self.env_vars}) + "\n").encode("utf-8"))
            line = self.from_child.readline()
        except OSError:
            line = b""
        self.answered()
        try:
            outcome = json.loads(line) if line.endswith(b"\n") else None
        except ValueError:
            outcome = None
        if not isinstance(outcome, dict):
            self.child_gone()
        if not outcome.get("ok"):
            raise _ForeignError(outcome.get("name") or "Error", outcome.get("value") or "", outcome.get("traceback") or "")
        return None if outcome.get("text") is None else _Shown(outcome["text"])


class _FieldsWorker(_ChildWorker):
    """A context whose interpreter speaks in length-prefixed fields (r_context.R, JavaContext.java):
    a request is the code and the run's env vars; its answers, any number of `display TEXT [HTML]`
    and `display_png PATH`, then `ok [TEXT [HTML]]` or `error NAME VALUE TRACEBACK`."""

    def send(self, fields):
        encoded = [field.encode("utf-8", errors="surrogateescape") for field in fields]
        self.to_child.write(b"%d\n" % len(encoded) + b"".join(b"%d\n%s" % (len(field), field) for field in encoded))

    def receive(self):
        """The next message's fields; None once the interpreter is gone."""
        count = self.from_child.readline()
        if not count.strip().isdigit():
            return None
        fields = []
        for _ in range(int(count)):
            size = self.from_child.readline()
            if not size.strip().isdigit():
                return None
            field = self.from_child.read(int(size))
            if len(field) < int(size):
                return None
            fields.append(field.decode("utf-8", errors="replace"))
        return fields

    def execute(self, code, filename):
        try:
            self.send([code] + [text for pair in self.env_vars.items() for text in pair])
        except OSError:
            self.child_gone()
        while True:
            try:
                fields = self.receive()
            except OSError:
                fields = None
            if not fields:
                self.child_gone()
            kind = fields[0]
            if kind == "display" and len(fields) in (2, 3):
                self.display(_Shown(*fields[1:]))
            elif kind == "display_png" and len(fields) == 2:
                self.display(_PngFile(fields[1]))
            elif kind == "ok" and len(fields) <= 3:
                self.answered()
                return _Shown(*fields[1:]) if len(fields) > 1 else None
            elif kind == "error" and len(fields) == 4:
                self.answered()
                raise _ForeignError(fields[1], fields[2], fields[3])
            else:
                # Out of step with its interpreter: no later message could be trusted.
                self.child_gone()


class _RWorker(_FieldsWorker):
    """An R context: one R process running r_context.R (the R console's evaluation of each top-level
    expression in the global environment; every visible value shown as print() shows it, the last
    one as the main result)."""

    def command(self, requests_fd, results_fd):
        return [RSCRIPT, "--vanilla", R_CONTEXT, requests_fd, results_fd]


class _JavaWorker(_FieldsWorker):
    """A Java context: one JVM running JavaContext (a JShell whose snippets run in that JVM;
    declarations live on, the last expression's value is the result). It may change its own
    environment for a run's env vars (java.base opened to it for that)."""

    def command(self, requests_fd, results_fd):
        opened = ["--add-opens", "java.base/java.util=ALL-UNNAMED", "--add-opens", "java.base/java.lang=ALL-UNNAMED"]
        return [JAVA] + opened + JAVA_CONTEXT + [requests_fd, results_fd]


class _ImportHooks:
    """A meta path finder of the code's imports: it runs a callback on a module right after its
    first loading (before the code gets it), and loads modules this file provides."""

    def __init__(self):
        self.callbacks = {}
        self.provided = {}

    def after_import(self, name, callback):
        self.callbacks[name] = callback

    def provide(self, name, loader):
        self.provided[name] = loader

    def install(self):
        sys.meta_path.insert(0, self)

    def find_spec(self, name, path=None, target=None):
        """The import system's call: a provided module's spec, or the module's own (found by the
        other finders) with its loading followed by its callback; None for every other name."""
        if name in self.provided:
            return importlib.machinery.ModuleSpec(name, self.provided[name])
        callback = self.callbacks.pop(name, None)  # once: asked again below, this finder passes
        if callback is None:
            return None
        spec = importlib.util.find_spec(name)
        loader = getattr(spec, "loader", None)
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        load = loader.exec_module

        def exec_module(module):
            load(module)
            try:
                callback(module)
            except Exception as error:  # noqa: BLE001 - the module works as it is
                sys.stderr.write("fast-sandbox: %s is as it came (%s: %s)\n" % (name, type(error).__name__, error))

        loader.exec_module = exec_module
        return spec


class _InlineFigures:
    """matplotlib's figures as an execution's results, as IPython's inline backend shows them: a
    Python context's matplotlib draws with the backend `module://fast_sandbox_matplotlib` (Agg's
    canvas), whose ``show()`` (``plt.show()``) displays every open figure (``png`` and its ``text``)
    and closes it; the figures a cell leaves open are shown and closed at its end. The backend is set
    when the code first imports matplotlib, unless the code's environment names one (MPLBACKEND) or
    a matplotlibrc does; processes the code starts keep matplotlib's own default."""

    BACKEND = "fast_sandbox_matplotlib"

    def __init__(self, worker):
        self.worker = worker

    def install(self, hooks):
        hooks.after_import("matplotlib", self.choose_backend)
        hooks.provide(self.BACKEND, self)

    def choose_backend(self, matplotlib):
        """matplotlib just loaded: this backend, unless one is named (MPLBACKEND, a matplotlibrc)."""
        chosen = _backend_setting(matplotlib)
        if not os.environ.get("MPLBACKEND") and chosen is getattr(matplotlib.rcsetup, "_auto_backend_sentinel", None):
            matplotlib.rcParams["backend"] = "module://" + self.BACKEND

    def create_module(self, spec):
        return None  # the import system's default module

    def exec_module(self, module):
        """The backend module, when matplotlib first draws: Agg's canvas, this show()."""
        from matplotlib.backends import backend_agg

        module.__doc__ = "Fast Sandbox's code interpreter: Agg's canvas, figures shown as the execution's results."
        module.FigureCanvas = backend_agg.FigureCanvas
        module.FigureManager = backend_agg.FigureManager
        module.show = self.show
        _record_box_plots()

    def active(self):
        matplotlib = sys.modules.get("matplotlib")
        if matplotlib is None or "matplotlib.pyplot" not in sys.modules:
            return False
        return _backend_setting(matplotlib) == "module://" + self.BACKEND

    def show(self, *args, **kwargs):
        """pyplot.show(): every open figure displayed, then closed (`block` and the like mean nothing here)."""
        self.flush()

    def flush(self, keep=None):
        """Closes every open figure and displays those but `keep` and the ones already shown, when this backend draws."""
        if not self.active():
            return
        from matplotlib import _pylab_helpers, pyplot

        figures = [manager.canvas.figure for manager in _pylab_helpers.Gcf.get_all_fig_managers()]
        pyplot.close("all")  # a closed figure still draws: the result's is drawn after this
        for figure in figures:
            if figure is not keep and id(figure) not in self.worker.figures_shown:
                self.worker.display(figure)


def _backend_setting(matplotlib):
    """matplotlib's backend setting as it is (reading rcParams["backend"] would choose one)."""
    return dict.__getitem__(matplotlib.rcParams, "backend")


# A DataFrame's `data` is left out beyond this many cells (its text and HTML are pandas' abridged ones).
MAX_DATA_CELLS = 100_000


def _frame_data(value):
    """A pandas DataFrame's columns as E2B's `data` result: ``{column: [values…]}`` (its
    ``to_dict(orient="list")``), JSON's types only (NaN as null, dates in ISO form, other values as
    their text); None for anything else, or a frame over MAX_DATA_CELLS cells."""
    if type(value).__name__ != "DataFrame" or type(value).__module__.split(".")[0] != "pandas":
        return None
    try:
        if value.size > MAX_DATA_CELLS:
            return None
        return {str(column): [_json_value(item) for item in items] for column, items in value.to_dict(orient="list").items()}
    except Exception:  # noqa: BLE001 - a frame this cannot read is its text and HTML alone
        return None


def _json_value(value):
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else None
    isoformat = getattr(value, "isoformat", None)
    if callable(isoformat):
        try:
            return isoformat() if value == value else None  # NaT is not equal to itself
        except (TypeError, ValueError):
            return None
    item = getattr(value, "item", None)  # a numpy scalar
    if callable(item):
        try:
            return _json_value(item())
        except (TypeError, ValueError):
            pass
    return str(value)


def _is_figure(value):
    """A matplotlib Figure (without importing matplotlib)."""
    return type(value).__module__ == "matplotlib.figure" and callable(getattr(value, "savefig", None))


class UsageError(Exception):
    """A magic this code interpreter does not have (IPython's error of that name)."""


# The name under which a Python context's code calls its magics (_with_magics).
_MAGIC = "__fast_sandbox_magic__"
_MAGIC_LINE = re.compile(r"^([ \t]*)(!|%)(?=[!%A-Za-z/.~$\"'-])(.*)$")
# `files = !ls`, `t = %timeit -o x`: the targets of an assignment from a command or magic.
_MAGIC_ASSIGNMENT = re.compile(r"^([ \t]*)([A-Za-z_][\w.]*(?:[ \t]*,[ \t]*[A-Za-z_][\w.]*)*)[ \t]*=[ \t]*(!|%)(?=[!%A-Za-z/.~$\"'-])(.*)$")
# What a command line's expansion replaces: `$$`, `$name` (`$name.attribute`), `{expression}`.
_EXPANSION = re.compile(r"\$\$|\$([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)|\{([^{}]+)\}")


def _with_magics(code):
    """The code with IPython's ``!command`` lines and ``%magic`` lines (also as an assignment's
    value: ``files = !ls``) as calls of the context's magic(), one line for one (tracebacks keep
    their line numbers), and a first line ``%%name`` making the whole cell that cell magic's."""
    if code.startswith("%%"):
        first, _, body = code.partition("\n")
        return "%s(%r, %r, %r)%s" % (_MAGIC, "%%", first[2:], body, "\n" * body.count("\n"))
    lines = code.split("\n")
    for index, line in enumerate(lines):
        found = _MAGIC_LINE.match(line)
        if found:
            lines[index] = "%s%s(%r, %r)" % (found.group(1), _MAGIC, found.group(2), found.group(3))
            continue
        assigned = _MAGIC_ASSIGNMENT.match(line)
        if assigned:
            indent, targets, kind, rest = assigned.groups()
            lines[index] = "%s%s = %s(%r, %r, capture=True)" % (indent, targets, _MAGIC, kind, rest)
    return "\n".join(lines)


def _ends_with_semicolon(source):
    """Whether the code's last token (comments and blank lines aside) is a ``;``: IPython's sign
    that the cell's value is not to be shown."""
    last = None
    try:
        for token in tokenize.generate_tokens(io.StringIO(source).readline):
            if token.type not in (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER):
                last = token
    except (tokenize.TokenError, SyntaxError):
        return False
    return last is not None and last.type == tokenize.OP and last.string == ";"


def _identity_of(fd):
    """What an open file descriptor refers to: (device, inode)."""
    status = os.fstat(fd)
    return (status.st_dev, status.st_ino)


def _error_name(error):
    try:
        return str(type(error).__name__)
    except Exception:  # noqa: BLE001 - a class whose name cannot be read
        return "Exception"


def _error_value(error):
    """str(error), as traceback.format_exception_only gives it: an error whose ``__str__`` fails
    is ``<exception str() failed>``."""
    try:
        return str(error)
    except Exception:  # noqa: BLE001 - the code's own __str__, broken
        return "<exception str() failed>"


def _user_traceback(error):
    """The traceback from the user's code on (this file's frames left out)."""
    frames = [frame for frame in traceback.extract_tb(error.__traceback__) if frame.filename != __file__]
    lines = ["Traceback (most recent call last):\n"] if frames else []
    lines += traceback.format_list(frames)
    lines += traceback.format_exception_only(type(error), error)
    return lines


def _representations(value):
    """A result's formats: `text` always, others as the object's IPython-style _repr_mimebundle_
    and _repr_*_ methods give them (a method's (data, metadata) is its data)."""
    formats = {"text": repr(value)}
    # An object's mimebundle wins over its other methods (and its repr), as in IPython's formatter.
    bundle = _mimebundle(value)
    if _is_figure(value) and (value.axes or value.lines):
        # As IPython's inline backend draws one (an empty figure is its text alone).
        buffer = io.BytesIO()
        value.savefig(buffer, format="png", bbox_inches="tight")
        formats["png"] = base64.b64encode(buffer.getvalue()).decode("ascii")
        chart = _chart(value)  # after the drawing: tick labels are set by it
        if chart is not None:
            formats["chart"] = chart
    data = _frame_data(value)
    if data is not None:
        formats["data"] = data
    for name, method in _REPR_METHODS:
        if name in bundle:
            continue  # the object's _repr_mimebundle_ gave it
        render = getattr(value, method, None)
        if not callable(render):
            continue
        try:
            rendered = render()
        except Exception:  # noqa: BLE001 - a broken renderer leaves that format out
            continue
        if isinstance(rendered, tuple) and len(rendered) == 2:
            rendered = rendered[0]  # IPython's (data, metadata): the metadata (an image's size…) means nothing here
        if rendered is None:
            continue
        if isinstance(rendered, bytes):
            rendered = base64.b64encode(rendered).decode("ascii")
        formats[name] = rendered
    formats.update(bundle)
    return formats


# IPython's _repr_*_ methods, by the name of E2B's format each gives.
_REPR_METHODS = (
    ("html", "_repr_html_"),
    ("markdown", "_repr_markdown_"),
    ("svg", "_repr_svg_"),
    ("png", "_repr_png_"),
    ("jpeg", "_repr_jpeg_"),
    ("latex", "_repr_latex_"),
    ("json", "_repr_json_"),
    ("javascript", "_repr_javascript_"),
    ("pdf", "_repr_pdf_"),
)

# The MIME types of IPython's mimebundles, by the name of E2B's format.
_MIME_FORMATS = {
    "text/plain": "text",
    "text/html": "html",
    "text/markdown": "markdown",
    "image/svg+xml": "svg",
    "image/png": "png",
    "image/jpeg": "jpeg",
    "text/latex": "latex",
    "application/json": "json",
    "application/javascript": "javascript",
    "application/pdf": "pdf",
}


def _mimebundle(value):
    """What an object's ``_repr_mimebundle_`` gives (a dict of MIME types, or it and its metadata),
    by E2B's format names (binary formats in base64, as Jupyter's wire has them); others left out."""
    render = getattr(value, "_repr_mimebundle_", None)
    if not callable(render) or isinstance(value, type):
        return {}
    try:
        bundle = render(include=None, exclude=None)
    except Exception:  # noqa: BLE001 - a broken renderer leaves its formats out
        return {}
    if isinstance(bundle, tuple) and len(bundle) == 2:
        bundle = bundle[0]
    if not isinstance(bundle, dict):
        return {}
    formats = {}
    for mime, name in _MIME_FORMATS.items():
        data = bundle.get(mime)
        if data is None:
            continue
        if isinstance(data, bytes):
            data = base64.b64encode(data).decode("ascii") if name in ("png", "jpeg", "pdf") else data.decode("utf-8", errors="replace")
        formats[name] = data
    return formats


def worker_main():
    requests_fd, events_fd = int(_argument("--requests", "-1")), int(_argument("--events", "-1"))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # until the worker's own handler is in place
    kind = {"bash": _ShellWorker, "javascript": _JavaScriptWorker, "typescript": _JavaScriptWorker, "r": _RWorker, "java": _JavaWorker}.get(_argument("--language", "python"), _Worker)
    worker = kind(requests_fd, events_fd)
    if kind is _Worker:
        hooks = _ImportHooks()
        worker.figures.install(hooks)
        # IPython.display's display() (`from IPython.display import display, HTML`) is this context's.
        hooks.after_import("IPython.core.display_functions", worker.use_display)
        hooks.after_import("IPython.display", worker.use_display)
        hooks.install()
    worker.run()


# --- charts: what a matplotlib figure shows, as E2B's `chart` ------------------------------------


def _chart(figure):
    """The data a figure draws, as E2B's `chart` result (its SDKs' Chart classes): one chart of its
    one plot — ``line`` (Line2D), ``scatter`` (scatter's points), ``bar`` (bar containers), ``pie``
    (wedges), ``box_and_whisker`` (boxplot()'s statistics, see _record_box_plots) — or a
    ``superchart`` of its plots; None when no plot is one of those (an image…) or the figure is
    beyond what this reads."""
    try:
        charts = [chart for chart in (_axes_chart(axes) for axes in figure.axes if axes.get_visible()) if chart is not None]
        if not charts:
            return None
        if len(charts) == 1:
            return charts[0]
        suptitle = getattr(figure, "_suptitle", None)
        return {"type": "superchart", "title": (suptitle.get_text() if suptitle is not None else "") or None, "elements": charts}
    except Exception:  # noqa: BLE001 - a figure this cannot read is its png and text alone
        return None


def _record_box_plots():
    """Box plots' statistics kept on their axes (``_fast_sandbox_boxes``) for their chart: nothing
    else tells a box plot's lines from others. Axes.bxp (which boxplot() calls) is wrapped, once."""
    import functools

    from matplotlib.axes import Axes

    draw = Axes.bxp
    if getattr(draw, "_fast_sandbox", False):
        return

    @functools.wraps(draw)
    def bxp(axes, bxpstats, positions=None, *args, **kwargs):
        drawn = draw(axes, bxpstats, positions, *args, **kwargs)
        try:
            stats = list(bxpstats)
            where = list(positions) if positions is not None else list(range(1, len(stats) + 1))
            horizontal = kwargs.get("orientation") == "horizontal" or kwargs.get("vert") is False
            axes._fast_sandbox_boxes = getattr(axes, "_fast_sandbox_boxes", []) + [(box, at, horizontal) for box, at in zip(stats, where)]
        except Exception:  # noqa: BLE001 - a box plot this cannot read has no chart
            pass
        return drawn

    bxp._fast_sandbox = True
    Axes.bxp = bxp


def _axes_chart(axes):
    from matplotlib.collections import PathCollection
    from matplotlib.container import BarContainer
    from matplotlib.patches import Wedge

    title = axes.get_title() or None
    wedges = [patch for patch in axes.patches if isinstance(patch, Wedge)]
    if wedges:
        return {
            "type": "pie",
            "title": title,
            "elements": [{"label": _label(wedge.get_label()), "angle": _number(wedge.theta2 - wedge.theta1), "radius": _number(wedge.r)} for wedge in wedges],
        }
    x_label, y_label = axes.get_xlabel(), axes.get_ylabel()
    two_dimensional = {"title": title, "x_label": x_label or None, "y_label": y_label or None, "x_unit": _unit(x_label), "y_unit": _unit(y_label)}
    boxes = getattr(axes, "_fast_sandbox_boxes", None)
    if boxes:
        elements = []
        for box, at, horizontal in boxes:
            label = box.get("label")
            elements.append(
                {
                    "label": str(label) if label is not None else _category(axes.yaxis if horizontal else axes.xaxis, at),
                    "min": _number(box["whislo"]),
                    "first_quartile": _number(box["q1"]),
                    "median": _number(box["med"]),
                    "third_quartile": _number(box["q3"]),
                    "max": _number(box["whishi"]),
                    "outliers": [_number(value) for value in box.get("fliers", ())],
                }
            )
        return dict(two_dimensional, type="box_and_whisker", elements=elements)
    bars = [container for container in axes.containers if isinstance(container, BarContainer)]
    if bars:
        elements = []
        for container in bars:
            horizontal = getattr(container, "orientation", "vertical") == "horizontal"
            category_axis = axes.yaxis if horizontal else axes.xaxis
            for patch in container:
                if horizontal:
                    at, value = patch.get_y() + patch.get_height() / 2, patch.get_width()
                else:
                    at, value = patch.get_x() + patch.get_width() / 2, patch.get_height()
                elements.append({"label": _category(category_axis, at), "group": _label(container.get_label()), "value": _number(value)})
        return dict(two_dimensional, type="bar", elements=elements)
    lines = [line for line in axes.get_lines() if line.get_visible() and len(line.get_xydata())]
    scatters = [collection for collection in axes.collections if isinstance(collection, PathCollection) and len(collection.get_offsets())]
    if not lines and not scatters:
        return None
    if lines:
        kind, elements = "line", [{"label": _label(line.get_label()), "points": _points(axes, line.get_xydata())} for line in lines]
    else:
        kind, elements = "scatter", [{"label": _label(points.get_label()), "points": _points(axes, points.get_offsets())} for points in scatters]
    chart = dict(two_dimensional, type=kind, elements=elements)
    for name, axis in (("x", axes.xaxis), ("y", axes.yaxis)):
        chart[name + "_scale"] = _scale(axes, axis)
        # The ticks drawn: those within the axis's view (matplotlib places some beyond it).
        low, high = sorted(axis.get_view_interval())
        ticks = [(tick, label.get_text()) for tick, label in zip(axis.get_ticklocs(), axis.get_ticklabels()) if low - 1e-9 * abs(high - low) <= tick <= high + 1e-9 * abs(high - low)]
        chart[name + "_ticks"] = [_coordinate(axis, tick) for tick, _ in ticks]
        chart[name + "_tick_labels"] = [text for _, text in ticks]
    return chart


def _points(axes, xy):
    import numpy

    # Masked coordinates (a scatter's invalid points) as NaN, so as null.
    values = numpy.ma.filled(numpy.ma.asarray(xy, dtype=float), numpy.nan)
    return [[_coordinate(axes.xaxis, x), _coordinate(axes.yaxis, y)] for x, y in values]


def _converter(axis):
    get = getattr(axis, "get_converter", None)  # matplotlib 3.10 and later; before, an attribute
    return get() if callable(get) else getattr(axis, "converter", None)


def _scale(axes, axis):
    converter = _converter(axis)
    if converter is not None and type(converter).__module__ == "matplotlib.dates":
        return "datetime"
    if converter is not None and type(converter).__name__ == "StrCategoryConverter":
        return "categorical"
    return axis.get_scale()


def _coordinate(axis, value):
    """A value on an axis as E2B gives it: a date's ISO form, a category's name, else a number."""
    converter = _converter(axis)
    if converter is not None and type(converter).__module__ == "matplotlib.dates":
        from matplotlib import dates

        return dates.num2date(float(value)).isoformat() if _number(value) is not None else None
    if converter is not None and type(converter).__name__ == "StrCategoryConverter":
        return _category(axis, value)
    return _number(value)


def _category(axis, at):
    """The category drawn at a position of an axis (its tick label there when it has no categories)."""
    mapping = getattr(axis.get_units(), "_mapping", None) or {}
    for name, position in mapping.items():
        if abs(position - at) < 1e-9:
            return str(name)
    for location, label in zip(axis.get_ticklocs(), axis.get_ticklabels()):
        if abs(location - at) < 1e-9 and label.get_text():
            return label.get_text()
    return str(_number(at))


def _number(value):
    """A float JSON can carry (NaN and infinities as null)."""
    number = float(value)
    return number if number == number and abs(number) != float("inf") else None


def _label(label):
    """A legend label; matplotlib's own (``_child0``, ``_nolegend_``) as none."""
    return "" if not label or label.startswith("_") else label


def _unit(label):
    """The unit a label ends with in parentheses or brackets (``Time (s)``: ``s``)."""
    found = re.search(r"[(\[]([^()\[\]]+)[)\]]\s*$", label or "")
    return found.group(1).strip() if found else None


# --- the server ---------------------------------------------------------------------------------


class ContextGone(Exception):
    pass


class Context:
    """One interpreter: a worker process, started at the first execution, one execution at a time."""

    def __init__(self, language, cwd):
        self.id = str(uuid.uuid4())
        self.language = language
        self.cwd = cwd
        self.lock = threading.Lock()
        self.removed = False
        # The generation (restarts) the running execution began in.
        self.running_generation = 0
        self.generation = 0
        # Events read but not yet handled: the next execution's start when a read brought both;
        # `scanned`: how much of it holds no newline (a result's line may be megabytes long).
        self.pending = bytearray()
        self.scanned = 0
        self.process = None
        self.requests = None
        self.events = None

    def view(self):
        return {"id": self.id, "language": self.language, "cwd": self.cwd}

    def start(self):
        requests_read, requests_write = os.pipe()
        events_read, events_write = os.pipe()
        account = RUN_AS
        env = dict(os.environ)
        if account is not None:
            env.update(HOME=account.pw_dir, USER=account.pw_name, LOGNAME=account.pw_name)
        try:
            identity = _identity(account) if account is not None else {}
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-u",
                    os.path.abspath(__file__),
                    "--worker",
                    "--language",
                    self.language,
                    "--requests",
                    str(requests_read),
                    "--events",
                    str(events_write),
                ],
                # A session of its own: stopping the context stops what its code started too (see stop()).
                start_new_session=True,
                cwd=self.cwd,
                env=env,
                pass_fds=(requests_read, events_write),
                stdin=subprocess.DEVNULL,
                **identity,
            )
        except BaseException as error:
            os.close(requests_write)
            os.close(events_read)
            reason = error.strerror if isinstance(error, OSError) and error.strerror else error
            raise ContextGone("the context's interpreter cannot start in %s: %s" % (self.cwd, reason)) from error
        finally:
            os.close(requests_read)
            os.close(events_write)
        self.requests = os.fdopen(requests_write, "wb", buffering=0)
        self.events = events_read

    def stop(self):
        """Stops the interpreter, and every process its code started, and closes its pipes; the caller holds the lock."""
        if self.process is not None:
            _kill_session(self.process.pid)
            self.process.kill()
            self.process.wait()
            self.requests.close()
            os.close(self.events)
            self.process = None
            self.pending = bytearray()
            self.scanned = 0

    def restart(self, remove=False):
        """Stops the interpreter at once, a running execution included (it ends with an error, and
        cleans up), without waiting for anything; with `remove` for good: an execution still waiting
        for the context finds it removed. One waiting to run on it gets a new interpreter."""
        if remove:
            self.removed = True
        self.generation += 1
        process = self.process
        if process is not None and process.poll() is None:
            _kill_session(process.pid)
            process.kill()
        if self.lock.acquire(blocking=False):
            try:
                self.stop()
            finally:
                self.lock.release()

    def execute(self, code, env_vars, send, client):
        """Runs `code`, passing each event to `send`. A client that goes away (`send` fails, or its
        socket `client` reaches its end) interrupts the execution (SIGINT); code that does not stop
        within INTERRUPT_GRACE_S loses its interpreter (the next execution starts a new one)."""
        with self.lock:
            generation = self.running_generation = self.generation
            if self.removed:
                raise ContextGone("context %s was removed" % self.id)
            if client is not None and _client_gone(client):
                # It waited behind another execution, and its client gave up meanwhile: not run at all.
                return
            if self.process is None or self.process.poll() is not None:
                self.stop()
                self.start()
            if self.removed or self.generation != generation:
                # Restarted or removed while its interpreter started (restart() saw none to stop).
                self.stop()
                raise ContextGone("context %s was restarted or removed" % self.id)
            try:
                self.requests.write((json.dumps({"code": code, "env_vars": env_vars}) + "\n").encode("utf-8"))
            except OSError as error:
                self.stop()
                raise ContextGone("the context's interpreter exited; a new one starts at the next execution") from error
            try:
                with selectors.DefaultSelector() as selector:
                    selector.register(self.events, selectors.EVENT_READ, "events")
                    if client is not None:
                        selector.register(client, selectors.EVENT_READ, "client")
                    self.pump(selector, client, send)
            except ContextGone:
                raise
            except BaseException:
                # Whatever it was, this interpreter's events cannot be trusted to line up any more.
                self.stop()
                raise
            finally:
                if self.removed:
                    self.stop()

    def pump(self, selector, client, send):
        interrupted_at = None
        while True:
            while True:
                end = self.pending.find(b"\n", self.scanned)
                if end < 0:
                    self.scanned = len(self.pending)
                    break
                line = bytes(self.pending[:end])
                del self.pending[: end + 1]
                self.scanned = 0
                event = json.loads(line)
                if event["type"] == "done":
                    return
                if not send(event) and interrupted_at is None:
                    interrupted_at = self.interrupt()
            if interrupted_at is not None and time.monotonic() > interrupted_at + INTERRUPT_GRACE_S:
                self.stop()
                raise ContextGone("the interrupted code did not stop within %ss: its interpreter was stopped" % INTERRUPT_GRACE_S)
            ready = selector.select(timeout=1.0)
            if not ready and interrupted_at is not None and self.process.poll() is None:
                # Again each second: one that came while the code was not running yet was ignored.
                self.process.send_signal(signal.SIGINT)
            if not ready and self.process.poll() is not None:
                # Dead, though something it started may hold its events open.
                status = self.process.returncode
                self.stop()
                raise self.exited("the context's interpreter exited (status %s)" % status)
            for key, _ in ready:
                if key.data == "client":
                    # The request was read whole: what is readable now is the client's end, or a
                    # pipelined request, which waits in the socket's buffer (no longer watched).
                    try:
                        gone = client.recv(1, socket.MSG_PEEK) == b""
                    except OSError:
                        gone = True
                    selector.unregister(client)
                    if gone and interrupted_at is None:
                        interrupted_at = self.interrupt()
                    continue
                chunk = os.read(self.events, 65536)
                if not chunk:
                    status = self.process.wait()
                    self.stop()
                    raise self.exited("the context's interpreter exited (status %s)" % status)
                self.pending += chunk

    def interrupt(self):
        self.process.send_signal(signal.SIGINT)
        return time.monotonic()

    def exited(self, what):
        """The error of an execution whose interpreter ended: removed or restarted (restart()) while
        the code ran, which says so, else `what`, after which the next execution starts a new one."""
        if self.removed:
            return ContextGone("context %s was removed while the code ran" % self.id)
        if self.generation != self.running_generation:
            return ContextGone("context %s was restarted while the code ran; its next execution runs in a new interpreter" % self.id)
        return ContextGone("%s; a new one starts at the next execution" % what)


class Contexts:
    def __init__(self, default_cwd):
        self.default_cwd = default_cwd
        self.lock = threading.Lock()
        self.by_id = {}
        self.defaults = {}

    def create(self, language, cwd):
        context = Context(language, cwd or self.default_cwd)
        with self.lock:
            self.by_id[context.id] = context
        return context

    def default(self, language):
        with self.lock:
            context = self.defaults.get(language)
            if context is None:
                context = Context(language, self.default_cwd)
                self.defaults[language] = context
                self.by_id[context.id] = context
            return context

    def get(self, context_id):
        with self.lock:
            return self.by_id.get(context_id)

    def remove(self, context_id):
        with self.lock:
            context = self.by_id.pop(context_id, None)
            for language, known in list(self.defaults.items()):
                if known is context:
                    del self.defaults[language]
        if context is not None:
            context.restart(remove=True)
        return context

    def all(self):
        with self.lock:
            return list(self.by_id.values())


def _language(value):
    language = (value or "python").lower()
    if language in ("python3", "py"):
        language = "python"
    if language in ("sh", "shell"):
        language = "bash"
    if language in ("js", "node", "nodejs"):
        language = "javascript"
    if language == "ts":
        language = "typescript"
    return language


def _client_gone(client):
    """Whether a client's connection reached its end (closed or reset) before the request's answer:
    what it sent after the request (a pipelined one) stays in the socket's buffer."""
    try:
        poller = select.poll()  # not select(): a descriptor may be past its 1024
        poller.register(client, select.POLLIN)
        return bool(poller.poll(0)) and client.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


def _kill_session(session):
    """SIGKILL to every process of a worker's session: the worker and what its code started (a
    bash context's commands, a Python context's subprocesses), as Jupyter kills a kernel's process
    group. Again while a pass finds some: one may have forked meanwhile."""
    for _ in range(3):
        found = False
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open("/proc/%s/stat" % entry, "rb") as stat:
                    fields = stat.read().rsplit(b")", 1)[1].split()
            except (OSError, IndexError):
                continue
            # After the command's name: state, ppid, pgrp, session.
            if len(fields) > 3 and fields[0] != b"Z" and fields[3] == str(session).encode("ascii"):
                found = True
                try:
                    os.kill(int(entry), signal.SIGKILL)
                except OSError:
                    pass
        if not found:
            return


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fast-sandbox-code-interpreter"
    contexts = None  # set by serve()

    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass

    def answer(self, status, body=None):
        data = b"" if body is None else json.dumps(body).encode("utf-8")
        self.send_response(status)
        if self.close_connection:
            self.send_header("Connection", "close")
        if body is not None:
            self.send_header("Content-Type", "application/json")
        if status != 204:  # a 204 has no body, nor a length of one (RFC 9110)
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def refuse(self, status, message):
        # A request refused before its body was read leaves the connection out of step: closed after.
        self.close_connection = True
        self.answer(status, {"code": status, "message": message})

    def body(self):
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            data = self.chunked_body()
        else:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_REQUEST_BYTES:
                raise ValueError("the request body is over %d bytes" % MAX_REQUEST_BYTES)
            data = self.rfile.read(length) if length else b""
        value = json.loads(data) if data.strip() else {}
        if not isinstance(value, dict):
            raise ValueError("the request body must be a JSON object")
        return value

    def chunked_body(self):
        """A body sent in chunks (Transfer-Encoding: chunked): its chunks joined, its trailer skipped."""
        data = bytearray()
        while True:
            line = self.rfile.readline(1024)
            size = int(line.split(b";", 1)[0].strip() or b"x", 16)  # a size that is none: ValueError
            if size < 0 or len(data) + size > MAX_REQUEST_BYTES:
                raise ValueError("the request body is over %d bytes" % MAX_REQUEST_BYTES)
            if size == 0:
                break
            chunk = self.rfile.read(size)
            if len(chunk) < size or self.rfile.readline(1024).strip():
                raise ValueError("the request body's chunks are cut short or out of step")
            data += chunk
        while self.rfile.readline(1024).strip():
            pass  # a trailer's fields, up to its blank line
        return bytes(data)

    def do_GET(self):  # noqa: N802 - http.server's name
        path = self.path.split("?", 1)[0]
        if path == "/health":
            return self.answer(200, {"status": "ok"})
        if path == "/contexts":
            return self.answer(200, [context.view() for context in self.contexts.all()])
        return self.refuse(404, "no route %s %s" % (self.command, path))

    def do_DELETE(self):  # noqa: N802
        parts = self.path.split("?", 1)[0].strip("/").split("/")
        if len(parts) == 2 and parts[0] == "contexts":
            if self.contexts.remove(parts[1]) is None:
                return self.refuse(404, "context %s not found" % parts[1])
            return self.answer(204)
        return self.refuse(404, "no route %s %s" % (self.command, self.path))

    def do_POST(self):  # noqa: N802
        path = self.path.split("?", 1)[0]
        parts = path.strip("/").split("/")
        try:
            body = self.body()
        except ValueError as error:
            return self.refuse(400, str(error))
        if path == "/execute":
            return self.execute(body)
        if path == "/contexts":
            language = _language(body.get("language"))
            if language not in LANGUAGES:
                return self.refuse(400, "language %r is not served here; languages: %s" % (body.get("language"), ", ".join(LANGUAGES)))
            cwd = body.get("cwd")
            if cwd is not None and not os.path.isdir(cwd):
                return self.refuse(400, "cwd %r is not a directory" % cwd)
            return self.answer(200, self.contexts.create(language, cwd).view())
        if len(parts) == 3 and parts[0] == "contexts" and parts[2] == "restart":
            context = self.contexts.get(parts[1])
            if context is None:
                return self.refuse(404, "context %s not found" % parts[1])
            context.restart()
            return self.answer(204)
        return self.refuse(404, "no route %s %s" % (self.command, path))

    def execute(self, body):
        code = body.get("code")
        if not isinstance(code, str):
            return self.refuse(400, "code must be a string")
        env_vars = body.get("env_vars") or {}
        if not isinstance(env_vars, dict):
            return self.refuse(400, "env_vars must be an object of strings")
        if body.get("context_id"):
            context = self.contexts.get(body["context_id"])
            if context is None:
                return self.refuse(404, "context %s not found" % body["context_id"])
        else:
            language = _language(body.get("language"))
            if language not in LANGUAGES:
                return self.refuse(400, "language %r is not served here; languages: %s" % (body.get("language"), ", ".join(LANGUAGES)))
            context = self.contexts.default(language)

        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        alive = [True]

        def send(event):
            if not alive[0]:
                return False
            data = (json.dumps(event) + "\n").encode("utf-8")
            try:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                self.wfile.flush()
            except OSError:
                alive[0] = False
            return alive[0]

        try:
            context.execute(code, env_vars, send, self.connection)
            send({"type": "end_of_execution"})
        except ContextGone as error:
            send({"type": "error", "name": "ContextRestarting", "value": str(error), "traceback": ""})
            send({"type": "unexpected_end_of_execution"})
        except Exception as error:  # noqa: BLE001 - whatever went wrong, the stream ends with it said
            send({"type": "error", "name": type(error).__name__, "value": "the code interpreter failed: %s" % error, "traceback": ""})
            send({"type": "unexpected_end_of_execution"})
        if alive[0]:
            try:
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()
            except OSError:
                pass
        else:
            self.close_connection = True


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True


def serve(listening, cwd):
    Handler.contexts = Contexts(cwd)
    server = Server(listening.getsockname()[:2], Handler, bind_and_activate=False)
    server.socket.close()
    server.socket = listening
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    server.serve_forever()


def _identity(account):
    """Popen's arguments that start a worker as `account` (its groups, group and user)."""
    groups = os.getgrouplist(account.pw_name, account.pw_gid)
    if sys.version_info >= (3, 9):
        return {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": groups}

    def change():  # Python 3.8: in the child, before its interpreter starts
        os.setgroups(groups)
        os.setgid(account.pw_gid)
        os.setuid(account.pw_uid)

    return {"preexec_fn": change}


def _run_as():
    """The account code runs as: --user NAME, else E2B's `user` when the image has it; None: this process's own."""
    name = _argument("--user", None)
    if os.getuid() != 0:
        return None
    try:
        return pwd.getpwnam(name or "user")
    except KeyError:
        if name and name != "root":
            sys.exit("code interpreter: no account %r in this image" % name)
        return None


def _default_cwd():
    for candidate in (_argument("--cwd", None), "/home/user", os.environ.get("HOME"), "/"):
        if candidate and os.path.isdir(candidate):
            return candidate
    return "/"


RUN_AS = None

if __name__ == "__main__":
    if "--worker" not in sys.argv:
        RUN_AS = _run_as()
    if "--worker" in sys.argv:
        worker_main()
    else:
        serve(_LISTENING, _default_cwd())
