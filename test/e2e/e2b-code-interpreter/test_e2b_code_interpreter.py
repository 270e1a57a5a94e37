"""E2B's code-interpreter SDK (PyPI `e2b-code-interpreter`, pinned in requirements.txt) against an embedded Fast Sandbox.

Written from E2B's public documentation, as a user of the SDK would: only E2B_API_URL,
E2B_SANDBOX_URL and E2B_API_KEY are set (by e2b-code-interpreter.test.ts, from `fsb e2b env`'s
values), and `Sandbox.create()` asks for the SDK's default template, `code-interpreter-v1` — a pool
of that name running Fast Sandbox's code-interpreter image. Nothing is patched.
"""

import base64
import struct
import threading
import time
import uuid

import pytest
from e2b import TimeoutException
from e2b_code_interpreter import Sandbox
from e2b_code_interpreter.charts import BarChart, BoxAndWhiskerChart, ChartType, LineChart, PieChart, ScaleType, SuperChart


@pytest.fixture(scope="module")
def sandbox():
    sbx = Sandbox.create(timeout=300, envs={"FROM_CREATE": "set-at-create"})
    yield sbx
    sbx.kill()


def test_first_run_right_after_create_gives_the_last_expression_and_streams_stdout():
    # A sandbox of its own: the first request reaches the interpreter the moment create returns.
    with Sandbox.create(timeout=120) as fresh:
        printed = []
        execution = fresh.run_code("x = 41\nprint('hello')\nx + 1", on_stdout=lambda message: printed.append(message.line))
        assert execution.error is None
        assert execution.text == "42"
        assert execution.logs.stdout == ["hello\n"]
        assert printed == ["hello\n"]
        assert execution.execution_count == 1


def test_variables_imports_and_functions_live_on_between_runs(sandbox):
    sandbox.run_code("import math\ncounter = 1\ndef double(n):\n    return 2 * n")
    sandbox.run_code("counter += 1")
    assert sandbox.run_code("double(counter) + math.floor(0.5)").text == "4"


def test_an_error_is_the_execution_s_error_with_its_traceback(sandbox):
    errors = []
    execution = sandbox.run_code("def broken():\n    return 1 / 0\nbroken()", on_error=errors.append)
    assert execution.error is not None
    assert execution.error.name == "ZeroDivisionError"
    assert execution.error.value == "division by zero"
    assert "line 2, in broken" in execution.error.traceback
    assert "return 1 / 0" in execution.error.traceback
    assert "ZeroDivisionError" in execution.error.traceback
    assert [error.name for error in errors] == ["ZeroDivisionError"]
    assert sandbox.run_code("undefined_name").error.name == "NameError"
    assert sandbox.run_code("def (:").error.name == "SyntaxError"


def test_stderr_and_the_output_of_processes_the_code_starts_are_streamed(sandbox):
    execution = sandbox.run_code(
        "import sys, subprocess\nprint('to stderr', file=sys.stderr)\nsubprocess.run(['sh', '-c', 'echo from a child'])\nNone"
    )
    assert execution.error is None
    assert "".join(execution.logs.stderr) == "to stderr\n"
    assert "".join(execution.logs.stdout) == "from a child\n"
    assert execution.results == []


def test_envs_of_a_run_apply_to_that_run_only_and_the_sandbox_s_to_every_run(sandbox):
    assert sandbox.run_code("import os\nos.environ['PER_RUN']", envs={"PER_RUN": "just-this-once"}).text == "'just-this-once'"
    assert sandbox.run_code("os.environ.get('PER_RUN')").text is None
    assert sandbox.run_code("os.environ['FROM_CREATE']").text == "'set-at-create'"
    # What the code sets in os.environ stays, as in a notebook.
    sandbox.run_code("os.environ['SET_BY_CODE'] = 'kept'")
    assert sandbox.run_code("os.environ.get('SET_BY_CODE')").text == "'kept'"


def test_what_a_cell_defines_pickles_and_the_image_has_ca_certificates(sandbox):
    assert sandbox.run_code("import pickle\nclass Point:\n    x = 1\npickle.loads(pickle.dumps(Point())).x").text == "1"
    assert sandbox.run_code("import ssl\nssl.create_default_context().cert_store_stats()['x509_ca'] > 0").text == "True"


def test_rich_results_and_display(sandbox):
    execution = sandbox.run_code(
        "class Bold:\n"
        "    def _repr_html_(self):\n"
        "        return '<b>bold</b>'\n"
        "    def __repr__(self):\n"
        "        return 'Bold()'\n"
        "display({'shown': True})\n"
        "Bold()"
    )
    assert execution.error is None
    assert [result.is_main_result for result in execution.results] == [False, True]
    assert execution.results[0].text == "{'shown': True}"
    assert execution.results[1].html == "<b>bold</b>"
    assert execution.text == "Bold()"


def test_top_level_await_runs_on_the_context_s_event_loop(sandbox):
    context = sandbox.create_code_context()
    execution = sandbox.run_code("import asyncio\nawait asyncio.sleep(0.01)\nanswer = await asyncio.sleep(0, result=41)\nanswer + 1", context=context)
    assert execution.error is None, execution.error
    assert execution.text == "42"
    assert sandbox.run_code("async def numbers():\n    for n in range(4):\n        yield n\ntotal = 0\nasync for n in numbers():\n    total += n\ntotal", context=context).text == "6"
    # Without top-level await, asyncio.run() works as in a script.
    assert sandbox.run_code("async def five():\n    return 5\nasyncio.run(five())", context=context).text == "5"
    # A task started by one run goes on while a later one awaits.
    sandbox.run_code("ticks = []\nasync def tick():\n    while True:\n        ticks.append(1)\n        await asyncio.sleep(0.01)\nticker = asyncio.get_event_loop().create_task(tick())", context=context)
    assert sandbox.run_code("await asyncio.sleep(0.2)\nlen(ticks) > 5", context=context).text == "True"
    # A timeout interrupts an awaited sleep; the context and its loop go on.
    with pytest.raises(TimeoutException):
        sandbox.run_code("await asyncio.sleep(60)", context=context, timeout=1)
    assert sandbox.run_code("await asyncio.sleep(0, result=answer)", context=context).text == "41"
    sandbox.remove_code_context(context)


def test_shell_commands_and_magics_run_as_in_a_notebook(sandbox):
    context = sandbox.create_code_context()
    shelled = sandbox.run_code("for n in range(2):\n    !echo line {n * 10} $HOME\n!exit 3\nafter = 'yes'\nafter", context=context)
    assert shelled.error is None, shelled.error
    assert shelled.logs.stdout == ["line 0 /home/user\n", "line 10 /home/user\n"]
    assert shelled.text == "'yes'"
    assert sandbox.run_code("%%bash\necho $((6 * 7))\necho to stderr >&2", context=context).logs.stderr == ["to stderr\n"]
    moved = sandbox.run_code("%matplotlib inline\n%cd /tmp\nimport os\nos.getcwd()", context=context)
    assert (moved.logs.stdout, moved.text) == (["/tmp\n"], "'/tmp'")
    unknown = sandbox.run_code("%nosuchmagic 1", context=context)
    assert (unknown.error.name, unknown.error.value, "line 1" in unknown.error.traceback) == ("UsageError", "Line magic function `%nosuchmagic` not found.", True)
    # A command's output as a value, `$name` in a command (a function's own names too), and
    # IPython's own magics run by an IPython shell over the context's namespace.
    captured = sandbox.run_code(
        "word = 'fsb'\nlisted = !printf '%s\\n' a b $word\ndef shout(word):\n    said = !echo $word {word.upper()} $$HOME\n    return said\nlisted, listed.n, shout('hi')",
        context=context,
    )
    assert captured.error is None, captured.error
    assert captured.text == "(['a', 'b', 'fsb'], 'a\\nb\\nfsb', ['hi HI /home/user'])", captured.text
    timed = sandbox.run_code("%timeit -n 2 -r 2 sum(range(word.__len__()))", context=context)
    assert timed.error is None and "per loop (mean ± std. dev. of 2 runs, 2 loops each)" in "".join(timed.logs.stdout), (timed.error, timed.logs)
    written = sandbox.run_code("%%writefile /tmp/fsb-magic.txt\nfrom a cell magic\n", context=context)
    assert (written.error, written.logs.stdout) == (None, ["Writing /tmp/fsb-magic.txt\n"]), written
    assert sandbox.files.read("/tmp/fsb-magic.txt") == "from a cell magic\n"
    cell_timed = sandbox.run_code("%%time\ntotal = sum(range(10))\ntotal * 2", context=context)
    assert (cell_timed.error, cell_timed.text, "Wall time:" in "".join(cell_timed.logs.stdout)) == (None, "90", True), cell_timed
    assert sandbox.run_code("%env FSB_MAGIC=on\nimport os\nos.environ['FSB_MAGIC'], type(get_ipython()).__name__", context=context).text == "('on', 'InteractiveShell')"
    # %pip installs into the user's site, and the running context imports it: a wheel made here (no
    # index is reached).
    made = sandbox.run_code(
        "import zipfile\nwith zipfile.ZipFile('/tmp/fsb_probe-1.0-py3-none-any.whl', 'w') as wheel:\n"
        "    wheel.writestr('fsb_probe/__init__.py', 'ANSWER = 42\\n')\n"
        "    wheel.writestr('fsb_probe-1.0.dist-info/METADATA', 'Metadata-Version: 2.1\\nName: fsb-probe\\nVersion: 1.0\\n')\n"
        "    wheel.writestr('fsb_probe-1.0.dist-info/WHEEL', 'Wheel-Version: 1.0\\nGenerator: test\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n')\n"
        "    wheel.writestr('fsb_probe-1.0.dist-info/RECORD', '')",
        context=context,
    )
    assert made.error is None, made.error
    installed = sandbox.run_code("%pip install --no-index --no-deps /tmp/fsb_probe-1.0-py3-none-any.whl\nimport fsb_probe\nfsb_probe.ANSWER, fsb_probe.__file__", context=context)
    assert installed.error is None, (installed.error, installed.logs)
    assert installed.text.startswith("(42, '/home/user/.local/lib/python3"), installed.text
    assert "Successfully installed fsb-probe-1.0" in "".join(installed.logs.stdout)
    assert sandbox.run_code("!pip --version", context=context).logs.stdout[0].startswith("pip ")
    sandbox.remove_code_context(context)


def png_size(result):
    """The width and height of a result's PNG (its IHDR), asserting that it is one."""
    data = base64.b64decode(result.png)
    assert data[:8] == b"\x89PNG\r\n\x1a\n", data[:16]
    return struct.unpack(">II", data[16:24])


def test_matplotlib_figures_are_png_results_and_pandas_frames_html(sandbox):
    # plt.show() shows the open figure (and closes it) where it is called.
    shown = sandbox.run_code("import matplotlib.pyplot as plt\nplt.plot([1, 4, 9])\nplt.title('squares')\nplt.show()\nprint('after show')")
    assert shown.error is None, shown.error
    assert len(shown.results) == 1
    assert shown.results[0].text == "<Figure size 640x480 with 1 Axes>"
    width, height = png_size(shown.results[0])
    assert 300 < width < 1000 and 200 < height < 800, (width, height)
    assert shown.logs.stdout == ["after show\n"]
    # A figure the cell leaves open is shown at its end; the next cell starts with none.
    left_open = sandbox.run_code("plt.bar(['a', 'b'], [3, 5])\nNone")
    assert [bool(result.png) for result in left_open.results] == [True]
    assert sandbox.run_code("len(plt.get_fignums())").text == "0"
    # A figure that is the cell's value is its main result, shown once.
    valued = sandbox.run_code("fig, axes = plt.subplots(1, 2, figsize=(8, 3))\naxes[0].plot([1, 2])\nfig")
    assert [(result.is_main_result, bool(result.png)) for result in valued.results] == [(True, True)]
    assert valued.text == "<Figure size 800x300 with 2 Axes>"
    assert png_size(valued.results[0])[0] > png_size(shown.results[0])[0]
    assert sandbox.run_code("import matplotlib\nmatplotlib.get_backend()").text == "'module://fast_sandbox_matplotlib'"
    # pandas (and numpy): a DataFrame is its text and its HTML table.
    frame = sandbox.run_code("import numpy as np, pandas as pd\npd.DataFrame({'n': np.arange(3), 'square': np.arange(3) ** 2})")
    assert frame.error is None, frame.error
    assert "<table" in frame.results[0].html
    assert frame.text.split() == ["n", "square", "0", "0", "0", "1", "1", "1", "2", "2", "4"]
    assert frame.results[0].data == {"n": [0, 1, 2], "square": [0, 1, 4]}
    mixed = sandbox.run_code("pd.DataFrame({'x': [0.5, np.nan], 'when': pd.to_datetime(['2024-01-02', None])})").results[0].data
    assert mixed == {"x": [0.5, None], "when": ["2024-01-02T00:00:00", None]}
    # A script the code starts keeps matplotlib's own default backend.
    child = sandbox.run_code("import subprocess, sys\nsubprocess.run([sys.executable, '-c', 'import matplotlib; print(matplotlib.get_backend())'], capture_output=True, text=True).stdout")
    assert child.text == "'agg\\n'"


def test_a_figure_s_data_is_its_chart(sandbox):
    line = sandbox.run_code(
        "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3], [1, 4, 9], label='squares')\nplt.plot([1, 2, 3], [1, 8, 27])\n"
        "plt.title('powers'); plt.xlabel('n'); plt.ylabel('Time (s)')\nplt.show()"
    )
    chart = line.results[0].chart
    assert isinstance(chart, LineChart), chart
    assert (chart.type, chart.title, chart.x_label, chart.y_label, chart.y_unit) == (ChartType.LINE, "powers", "n", "Time (s)", "s")
    assert [(element.label, element.points) for element in chart.elements] == [("squares", [(1, 1), (2, 4), (3, 9)]), ("", [(1, 1), (2, 8), (3, 27)])]
    assert chart.x_scale == ScaleType.LINEAR
    assert chart.y_ticks[0] >= 0 and chart.y_ticks[-1] <= 28 and len(chart.y_ticks) == len(chart.y_tick_labels)
    bars = sandbox.run_code("plt.bar(['a', 'b', 'c'], [3, 5, 2], label='counts')\nNone").results[0].chart
    assert isinstance(bars, BarChart), bars
    assert [(element.label, element.group, element.value) for element in bars.elements] == [("a", "counts", 3), ("b", "counts", 5), ("c", "counts", 2)]
    pie = sandbox.run_code("plt.pie([1, 3], labels=['one', 'three'])\nNone").results[0].chart
    assert isinstance(pie, PieChart), pie
    assert [(element.label, round(element.angle)) for element in pie.elements] == [("one", 90), ("three", 270)]
    both = sandbox.run_code(
        "import datetime\nfig, (left, right) = plt.subplots(1, 2)\nleft.plot([datetime.date(2024, 1, 1), datetime.date(2024, 1, 3)], [1, 2])\n"
        "right.scatter([1, 2], [3, 4], label='dots')\nfig.suptitle('two')\nfig"
    ).results[0].chart
    assert isinstance(both, SuperChart), both
    assert both.title == "two"
    dated, dots = both.elements
    assert (dated.type, dated.x_scale, dated.elements[0].points[0]) == (ChartType.LINE, ScaleType.DATETIME, ("2024-01-01T00:00:00+00:00", 1))
    assert (dots.type, dots.elements[0].label, dots.elements[0].points) == (ChartType.SCATTER, "dots", [(1, 3), (2, 4)])
    box = sandbox.run_code("plt.boxplot([[1, 2, 3, 4, 50], [2, 3, 4]], tick_labels=['a', 'b'])\nNone").results[0].chart
    assert isinstance(box, BoxAndWhiskerChart), box
    first = box.elements[0]
    assert (first.label, first.min, first.first_quartile, first.median, first.third_quartile, first.max, first.outliers) == ("a", 1, 2, 3, 4, 4, [50])
    assert box.elements[1].label == "b"
    # What is not one of those plots (an image) is its png alone.
    image = sandbox.run_code("plt.imshow([[1, 2], [3, 4]])\nNone").results[0]
    assert image.png and image.chart is None


def test_ipython_s_display_shows_through_the_context(sandbox):
    execution = sandbox.run_code(
        "from IPython.display import display, HTML, Markdown\ndisplay(HTML('<b>bold</b>'), Markdown('*it*'))\ndisplay('plain', {'n': 1})\n'last'"
    )
    assert execution.error is None, execution.error
    shown = [(result.html, result.markdown, result.text, result.is_main_result) for result in execution.results]
    assert shown == [
        ("<b>bold</b>", None, "<IPython.core.display.HTML object>", False),
        (None, "*it*", "<IPython.core.display.Markdown object>", False),
        (None, None, "'plain'", False),
        (None, None, "{'n': 1}", False),
        (None, None, "'last'", True),
    ]


def test_contexts_are_separate_interpreters(sandbox):
    context = sandbox.create_code_context(cwd="/tmp")
    assert context.language == "python"
    assert context.cwd == "/tmp"
    assert sandbox.run_code("only_here = 'in the context'\nimport os\nos.getcwd()", context=context).text == "'/tmp'"
    assert sandbox.run_code("only_here", context=context).text == "'in the context'"
    assert sandbox.run_code("only_here").error.name == "NameError"
    assert context.id in [known.id for known in sandbox.list_code_contexts()]
    sandbox.remove_code_context(context)
    assert context.id not in [known.id for known in sandbox.list_code_contexts()]


def test_restarting_a_context_stops_its_running_code_at_once_and_clears_its_state(sandbox):
    context = sandbox.create_code_context()
    sandbox.run_code("state = 'before the restart'", context=context)
    outcome = {}

    def long_run():
        outcome["execution"] = sandbox.run_code("import time\ntime.sleep(60)", context=context)

    runner = threading.Thread(target=long_run)
    runner.start()
    time.sleep(1)
    sandbox.restart_code_context(context)
    runner.join(30)
    assert not runner.is_alive(), "the running code was stopped by the restart"
    assert outcome["execution"].error is not None
    assert outcome["execution"].error.value == f"context {context.id} was restarted while the code ran; its next execution runs in a new interpreter"
    assert sandbox.run_code("state", context=context).error.name == "NameError"
    # Removed while its code runs: said so (not that a new interpreter starts at the next execution).
    runner = threading.Thread(target=long_run)
    runner.start()
    time.sleep(1)
    sandbox.remove_code_context(context)
    runner.join(30)
    assert not runner.is_alive(), "the running code was stopped by the removal"
    assert outcome["execution"].error.value == f"context {context.id} was removed while the code ran"


def test_a_run_past_its_timeout_is_interrupted_and_the_context_keeps_its_state(sandbox):
    sandbox.run_code("survivor = 'still here'")
    with pytest.raises(TimeoutException):
        sandbox.run_code("import time\nwhile True:\n    time.sleep(0.05)", timeout=1)
    # Interrupted, not killed: the next run in the same context finds its variables.
    assert sandbox.run_code("survivor").text == "'still here'"


def test_the_sandbox_is_a_whole_e2b_sandbox_too(sandbox):
    assert sandbox.commands.run("echo via envd").stdout == "via envd\n"
    sandbox.files.write("/home/user/written-by-files.txt", "through the files API")
    assert sandbox.run_code("open('/home/user/written-by-files.txt').read()").text == "'through the files API'"
    # The code runs as E2B's `user`, as commands and files do: what one writes, the other may change.
    assert sandbox.run_code("import os, pwd\n(pwd.getpwuid(os.getuid()).pw_name, os.environ['HOME'])").text == "('user', '/home/user')"
    sandbox.run_code("open('/home/user/written-by-code.txt', 'w').write('by run_code')")
    sandbox.files.write("/home/user/written-by-code.txt", "replaced through the files API")
    assert sandbox.commands.run("cat /home/user/written-by-code.txt").stdout == "replaced through the files API"
    # As on E2B: a command or a file that names no user acts as `user`, relative paths in /home/user.
    assert sandbox.commands.run("whoami; pwd").stdout == "user\n/home/user\n"
    assert sandbox.files.write("relative.txt", "x").path == "/home/user/relative.txt"
    sandbox.run_code("open('relative.txt', 'a').write('y')")
    assert sandbox.files.read("relative.txt") == "xy"
    assert sandbox.commands.run("whoami", user="root").stdout == "root\n"



def test_an_error_whose_str_fails_is_the_execution_s_and_the_context_lives_on(sandbox):
    context = sandbox.create_code_context()
    sandbox.run_code("kept = 'still here'", context=context)
    execution = sandbox.run_code("class Unprintable(Exception):\n    def __str__(self):\n        raise RuntimeError('no text')\nraise Unprintable()", context=context)
    assert (execution.error.name, execution.error.value) == ("Unprintable", "<exception str() failed>"), execution.error
    assert "line 4" in execution.error.traceback and "Unprintable: <exception str() failed>" in execution.error.traceback
    # Its interpreter did not die with it: the context's variables are there.
    assert sandbox.run_code("kept", context=context).text == "'still here'"
    sandbox.remove_code_context(context)


def test_a_failing_or_interrupted_cell_s_figures_are_its_own(sandbox):
    context = sandbox.create_code_context()
    failing = sandbox.run_code("import matplotlib.pyplot as plt\nplt.plot([1, 2])\n1 / 0", context=context)
    assert failing.error.name == "ZeroDivisionError"
    assert [bool(result.png) for result in failing.results] == [True]
    # The next cell starts with none open, and shows none.
    assert sandbox.run_code("len(plt.get_fignums())", context=context).results[0].text == "0"
    with pytest.raises(TimeoutException):
        sandbox.run_code("plt.plot([3, 4])\nimport time\ntime.sleep(60)", context=context, timeout=1)
    after = sandbox.run_code("'after the interrupt'", context=context)
    assert [(result.is_main_result, result.png) for result in after.results] == [(True, None)], after.results
    sandbox.remove_code_context(context)


def test_repr_methods_giving_data_and_metadata_and_mimebundles(sandbox):
    execution = sandbox.run_code(
        "import base64, io\nimport matplotlib.pyplot as plt\nfrom IPython.display import display, JSON, Image\n"
        "plt.plot([1, 2])\nbuffer = io.BytesIO()\nplt.savefig(buffer, format='png')\nplt.close('all')\n"
        "display(JSON({'a': 1}))\ndisplay(Image(data=buffer.getvalue(), width=100))\n"
        "class Bundled:\n"
        "    def _repr_mimebundle_(self, include=None, exclude=None):\n"
        "        return {'text/plain': 'Bundled!', 'text/html': '<i>b</i>', 'application/json': {'b': [1]}, 'image/png': base64.b64encode(buffer.getvalue()).decode()}, {}\n"
        "    def _repr_html_(self):\n"
        "        return '<b>not this one</b>'\n"
        "    def _repr_markdown_(self):\n"
        "        return '*and this one*'\n"
        "Bundled()"
    )
    assert execution.error is None, execution.error
    shown, image, bundled = execution.results
    assert shown.json == {"a": 1}
    assert png_size(image) == png_size(bundled)
    assert (bundled.text, bundled.html, bundled.json, bundled.markdown, bundled.is_main_result) == ("Bundled!", "<i>b</i>", {"b": [1]}, "*and this one*", True)


def test_a_run_whose_client_gave_up_while_it_waited_for_its_context_never_runs(sandbox):
    context = sandbox.create_code_context()
    sandbox.run_code("import time\nran = []", context=context)
    first = threading.Thread(target=sandbox.run_code, args=("time.sleep(5)\nran.append('first')",), kwargs={"context": context})
    first.start()
    time.sleep(1)
    with pytest.raises(TimeoutException):
        # (Code that an interrupt does not stop: had it run, it would say so.)
        sandbox.run_code("try:\n    time.sleep(0.5)\nexcept KeyboardInterrupt:\n    pass\nran.append('queued')", context=context, timeout=1)
    first.join(30)
    assert sandbox.run_code("ran", context=context).text == "['first']"
    sandbox.remove_code_context(context)


def test_a_result_of_many_megabytes_and_code_of_many_megabytes(sandbox):
    context = sandbox.create_code_context()
    # One line of 16 MiB (the sandbox has 512 MiB for the server and its contexts), read whole
    # within the run's timeout.
    big = sandbox.run_code("'x' * (16 << 20)", context=context, timeout=120)
    assert big.error is None and big.text == "'" + "x" * (16 << 20) + "'"
    del big
    # The worker reads a request a buffer at a time, not a byte per read (its read syscalls, from /proc).
    reads = "int(next(line for line in open('/proc/self/io') if line.startswith('syscr')).split()[1])"
    before = int(sandbox.run_code(reads, context=context).text)
    padded = sandbox.run_code("# " + "y" * (4 << 20) + "\n" + reads, context=context)
    assert int(padded.text) - before < 10000, int(padded.text) - before
    sandbox.remove_code_context(context)


def test_output_without_a_newline_is_streamed_while_the_code_runs(sandbox):
    # A handshake, not a race with a sleep: after writing without a newline, the code waits for a
    # file per stream that only the callback of that stream's first output writes. Output held back
    # until the end would hold the code back for good, and the run's timeout would fail the test.
    run = uuid.uuid4().hex
    gates = {"stdout": f"/tmp/go-stdout-{run}", "stderr": f"/tmp/go-stderr-{run}"}
    arrived = []
    writers = {}

    def on_output(stream):
        def on_message(message):
            arrived.append(message.line)
            if stream not in writers:
                # From a thread of its own: the callback runs in the thread reading the run's output.
                writers[stream] = threading.Thread(target=sandbox.files.write, args=(gates[stream], "go"))
                writers[stream].start()

        return on_message

    try:
        execution = sandbox.run_code(
            "import os, sys, time\nsys.stdout.write('working')\nsys.stderr.write('50%')\n"
            f"while not (os.path.exists({gates['stdout']!r}) and os.path.exists({gates['stderr']!r})):\n    time.sleep(0.05)\n"
            "print(' done')",
            on_stdout=on_output("stdout"),
            on_stderr=on_output("stderr"),
            timeout=60,
        )
    finally:
        for writer in writers.values():
            writer.join()
    assert execution.error is None, execution.error
    assert sorted(arrived) == [" done\n", "50%", "working"], arrived


def test_a_trailing_semicolon_hides_the_cell_s_value(sandbox):
    assert sandbox.run_code("1 + 1;").results == []
    assert sandbox.run_code("hidden = 3\nhidden;  # a comment\n").results == []
    shown = sandbox.run_code("display('shown');")
    assert [(result.text, result.is_main_result) for result in shown.results] == [("'shown'", False)]
    assert sandbox.run_code("'a;'  # ;").text == "'a;'"


def test_utf8_cut_between_writes_beside_invalid_bytes(sandbox):
    execution = sandbox.run_code(
        "import os, time\nos.write(1, b'\\xffabcd' + 'é'.encode()[:1])\ntime.sleep(0.3)\nos.write(1, 'é'.encode()[1:] + b' ok\\n')\n"
        "os.write(2, b'\\xfe' + '€'.encode()[:2])\ntime.sleep(0.3)\nos.write(2, '€'.encode()[2:] + b'\\n')\nNone"
    )
    assert "".join(execution.logs.stdout) == "\ufffdabcdé ok\n"
    assert "".join(execution.logs.stderr) == "\ufffd€\n"


def test_a_chunked_request_body_and_a_204_without_a_body(sandbox):
    # The SDK's own client and address for the interpreter, with a body of unknown length (chunked).
    headers = {"Content-Type": "application/json", "E2b-Sandbox-Id": sandbox.sandbox_id, "E2b-Sandbox-Port": "49999"}
    if sandbox.traffic_access_token:
        headers["E2B-Traffic-Access-Token"] = sandbox.traffic_access_token
    answer = sandbox._client.post(f"{sandbox._jupyter_url}/execute", content=iter([b'{"code": ', b'"6 * 7"}']), headers=headers)
    assert answer.status_code == 200, answer.text
    assert '"text": "42"' in answer.text
    context = sandbox.create_code_context()
    removed = sandbox._client.delete(f"{sandbox._jupyter_url}/contexts/{context.id}", headers=headers)
    assert (removed.status_code, removed.content, "content-length" in removed.headers) == (204, b"", False)

def test_bash_runs_keep_the_shell_s_variables_functions_and_directory(sandbox):
    first = sandbox.run_code("greeting=hello\nshout() { echo \"$1!\"; }\ncd /tmp\necho started", language="bash")
    assert first.error is None
    assert first.logs.stdout == ["started\n"]
    assert first.results == []
    execution = sandbox.run_code('shout "$greeting"; pwd; echo "$FROM_CREATE"', language="bash")
    assert execution.error is None
    assert "".join(execution.logs.stdout) == "hello!\n/tmp\nset-at-create\n"
    # A context of its own, not the Python one's.
    assert sandbox.run_code("greeting").error.name == "NameError"


def test_a_bash_run_ending_with_a_failing_command_is_an_error_with_its_stderr(sandbox):
    execution = sandbox.run_code("echo to stderr >&2\nls /no/such/path", language="bash")
    assert execution.error is not None
    assert execution.error.name == "CommandExitError"
    assert execution.error.value == "exit status 1"
    assert "to stderr\n" in "".join(execution.logs.stderr)
    assert "/no/such/path" in "".join(execution.logs.stderr)
    assert sandbox.run_code("(exit 3)", language="bash").error.value == "exit status 3"
    assert sandbox.run_code("false; true", language="bash").error is None


def test_bash_envs_of_a_run_apply_to_that_run_only(sandbox):
    execution = sandbox.run_code('echo "$PER_RUN"; sh -c \'echo "child: $PER_RUN"\'', language="bash", envs={"PER_RUN": "it's once"})
    assert "".join(execution.logs.stdout) == "it's once\nchild: it's once\n"
    assert "".join(sandbox.run_code('echo "[${PER_RUN-}]"', language="bash").logs.stdout) == "[]\n"


def test_a_bash_run_past_its_timeout_is_interrupted_and_the_shell_keeps_its_state(sandbox):
    context = sandbox.create_code_context(language="bash", cwd="/home/user")
    assert context.language == "bash"
    sandbox.run_code("survivor='still here'", context=context)
    with pytest.raises(TimeoutException):
        sandbox.run_code("sleep 60", context=context, timeout=1)
    with pytest.raises(TimeoutException):
        sandbox.run_code("while :; do :; done", context=context, timeout=1)
    assert "".join(sandbox.run_code('echo "$survivor"; pwd', context=context).logs.stdout) == "still here\n/home/user\n"
    sandbox.remove_code_context(context)


def test_exit_ends_a_bash_context_and_a_restart_stops_what_it_started(sandbox):
    context = sandbox.create_code_context(language="bash")
    sandbox.run_code("lost=1", context=context)
    assert sandbox.run_code("exit 4", context=context).error.name == "ContextRestarting"
    assert "".join(sandbox.run_code('echo "[${lost-}]"', context=context).logs.stdout) == "[]\n"
    # A background process of the context goes with it at a restart, as a Jupyter kernel's group does.
    background = sandbox.run_code("sleep 300 &\necho $!", context=context)
    pid = "".join(background.logs.stdout).strip()
    assert sandbox.commands.run("kill -0 %s" % pid).exit_code == 0
    sandbox.restart_code_context(context)
    deadline = time.monotonic() + 10
    while sandbox.commands.run("kill -0 %s 2>/dev/null && echo alive || echo gone" % pid).stdout.strip() == "alive":
        assert time.monotonic() < deadline, "the context's background sleep outlived its restart"
        time.sleep(0.1)
    sandbox.remove_code_context(context)


def test_javascript_declarations_live_on_and_the_last_expression_is_the_result(sandbox):
    execution = sandbox.run_code("let n = 40\nconst add = (a, b) => a + b\nconsole.log('from js')\nadd(n, 2)", language="js")
    assert execution.error is None
    assert execution.text == "42"
    assert execution.logs.stdout == ["from js\n"]
    assert sandbox.run_code("n * 2", language="javascript").text == "80"
    # Top-level await; what it declares lives on too.
    assert sandbox.run_code("const later = await new Promise((r) => setTimeout(() => r(5), 10))\nlater + n", language="js").text == "45"
    assert sandbox.run_code("later", language="js").text == "5"
    assert sandbox.run_code("Promise.resolve({ resolved: [1, 2] })", language="js").text == "{ resolved: [ 1, 2 ] }"
    assert sandbox.run_code("process.env.FROM_CREATE + ' ' + process.env.PER_RUN", language="js", envs={"PER_RUN": "once"}).text == "'set-at-create once'"
    assert sandbox.run_code("process.env.PER_RUN", language="js").text is None
    # Not the Python context's.
    assert sandbox.run_code("n").error.name == "NameError"


def test_a_javascript_error_is_the_execution_s_with_its_stack(sandbox):
    execution = sandbox.run_code("function broken() {\n  throw new TypeError('bad input')\n}\nbroken()", language="js")
    assert execution.error is not None
    assert execution.error.name == "TypeError"
    assert execution.error.value == "bad input"
    assert "at broken (<cell>:2:9)" in execution.error.traceback
    assert "javascript_context" not in execution.error.traceback
    assert sandbox.run_code("await Promise.reject(new RangeError('async'))", language="js").error.name == "RangeError"
    assert sandbox.run_code("let = = 1", language="js").error.name == "SyntaxError"
    assert sandbox.run_code("not_declared_anywhere", language="js").error.name == "ReferenceError"


def test_a_javascript_run_past_its_timeout_is_interrupted_and_the_context_keeps_its_state(sandbox):
    context = sandbox.create_code_context(language="js")
    assert context.language == "javascript"
    sandbox.run_code("var survivor = 'still here'", context=context)
    with pytest.raises(TimeoutException):
        sandbox.run_code("while (true) {}", context=context, timeout=1)
    with pytest.raises(TimeoutException):
        sandbox.run_code("await new Promise(() => {})", context=context, timeout=1)
    assert sandbox.run_code("survivor", context=context).text == "'still here'"
    sandbox.remove_code_context(context)


def test_a_javascript_context_answers_whatever_its_code_throws_prints_or_ends_with(sandbox):
    context = sandbox.create_code_context(language="js")
    sandbox.run_code("var keep = 41", context=context, timeout=30)
    # A value whose inspection throws is the run's error; the context answers the next run.
    unshowable = sandbox.run_code('({ [Symbol.for("nodejs.util.inspect.custom")]() { throw new Error("boom") } })', context=context, timeout=30)
    assert (unshowable.error.name, unshowable.error.value) == ("Error", "boom")
    assert sandbox.run_code("keep + 1", context=context, timeout=30).text == "42"
    # Falsy thrown values are errors too, with top-level await or without.
    for code in ("throw undefined", "Promise.reject()", "await 1; throw 0", 'await 1; throw ""'):
        assert sandbox.run_code(code, context=context, timeout=30).error is not None, code
    # All a run prints is its own, before its result, however much it is.
    many = sandbox.run_code("for (let i = 0; i < 100000; i++) console.log(i); 'done'", context=context, timeout=60)
    assert many.text == "'done'"
    assert "".join(many.logs.stdout).count("\n") == 100000
    assert sandbox.run_code("keep + 2", context=context, timeout=30).logs.stdout == []
    # process.exit() ends the context at once (not when the next request comes).
    ended = sandbox.run_code("console.log('before'); process.exit(3)", context=context, timeout=30)
    assert ended.error.name == "ContextRestarting"
    assert sandbox.run_code("typeof keep", context=context, timeout=30).text == "'undefined'"
    sandbox.remove_code_context(context)


def test_r_runs_in_the_global_environment_and_shows_values_as_print_does(sandbox):
    execution = sandbox.run_code(
        'frame <- data.frame(n = 1:3, word = c("a", "b", "ü"))\nsquare <- function(x) x^2\nprint("printed")\nframe',
        language="r",
    )
    assert execution.error is None
    assert "".join(execution.logs.stdout) == '[1] "printed"\n'
    assert execution.text == "  n word\n1 1    a\n2 2    b\n3 3    ü"
    # And as an HTML table, as IRkernel shows a data frame.
    html = execution.results[0].html
    assert "<caption>A data.frame: 3 × 2</caption>" in html
    assert "<tr><th>3</th><td>3</td><td>ü</td></tr>" in html
    assert sandbox.run_code("square(nrow(frame))", language="r").text == "[1] 9"
    assert sandbox.run_code('unname(Sys.getenv(c("FROM_CREATE", "PER_RUN")))', language="r", envs={"PER_RUN": "once"}).text == '[1] "set-at-create" "once"         '
    assert sandbox.run_code('Sys.getenv("PER_RUN", "unset")', language="r").text == '[1] "unset"'
    assert sandbox.run_code("getwd()", language="r").text == '[1] "/home/user"'
    # Not the Python context's, nor the other way round.
    assert sandbox.run_code("frame").error.name == "NameError"
    assert sandbox.run_code("undefined_here", language="r").error.value == "object 'undefined_here' not found"


def test_an_r_run_past_its_timeout_is_interrupted_and_quit_restarts_the_context(sandbox):
    context = sandbox.create_code_context(language="r")
    assert context.language == "r"
    sandbox.run_code('survivor <- "still here"', context=context)
    with pytest.raises(TimeoutException):
        sandbox.run_code("repeat {}", context=context, timeout=1)
    with pytest.raises(TimeoutException):
        sandbox.run_code("Sys.sleep(60)", context=context, timeout=1)
    assert sandbox.run_code("survivor", context=context).text == '[1] "still here"'
    assert sandbox.run_code('quit("no", 5)', context=context).error.name == "ContextRestarting"
    assert sandbox.run_code('exists("survivor")', context=context).text == "[1] FALSE"
    sandbox.remove_code_context(context)


def test_an_r_context_survives_what_its_code_does_to_r_and_interrupts_between_runs(sandbox):
    context = sandbox.create_code_context(language="r")
    sandbox.run_code("x <- 41", context=context)
    # The code's own definitions of base functions do not reach the context's machinery, and
    # print methods of its own are found.
    redefined = sandbox.run_code(
        'sprintf <- function(fmt, ...) "mine"; c <- function(...) 0; print.mine <- function(x, ...) cat("a mine\\n")\nstructure(1, class = "mine")',
        context=context,
        timeout=30,
    )
    assert redefined.error is None
    assert redefined.text == "a mine"
    # Closing every connection leaves the context's own pipes working.
    assert sandbox.run_code("closeAllConnections(); x + 1", context=context, timeout=30).text == "[1] 42"
    assert sandbox.run_code("x + 2", context=context, timeout=30).text == "[1] 43"
    # An interrupt while the context waits for its next run (late for the one before) is dropped:
    # neither the interpreter nor the next run gets it.
    signalled = sandbox.run_code(
        "import os, signal\n"
        "def r_processes():\n"
        "    for pid in filter(str.isdigit, os.listdir('/proc')):\n"
        "        try:\n"
        "            if b'r_context.R' in open('/proc/%s/cmdline' % pid, 'rb').read():\n"
        "                yield int(pid)\n"
        "        except OSError:\n"
        "            pass\n"
        "signalled = [os.kill(pid, signal.SIGINT) for pid in r_processes()]\n"
        "len(signalled) > 0",
        timeout=30,
    )
    assert signalled.text == "True"
    assert sandbox.run_code("x + 3", context=context, timeout=30).text == "[1] 44"
    # An invalid env var is the run's error; the context lives on.
    refused = sandbox.run_code("x", context=context, envs={"A=B": "1"}, timeout=30)
    assert refused.error.name == "ValueError"
    assert "'A=B'" in refused.error.value
    # R's end is the context's, even while a process it started holds the pipes R was given (a
    # wait for those would last the sleep, past the run's timeout).
    assert sandbox.run_code('system("sleep 60 &"); quit()', context=context, timeout=50).error.name == "ContextRestarting"
    assert sandbox.run_code('exists("x")', context=context, timeout=30).text == "[1] FALSE"
    sandbox.remove_code_context(context)


def test_java_declarations_live_on_and_the_last_expression_is_the_result(sandbox):
    execution = sandbox.run_code(
        'record Point(int x, int y) {}\nint twice(int n) { return 2 * n; }\nvar points = new ArrayList<Point>();\npoints.add(new Point(1, 2));\nSystem.out.println("added " + points.size());\npoints',
        language="java",
    )
    assert execution.error is None
    assert "".join(execution.logs.stdout) == "added 1\n"
    assert execution.text == "[Point[x=1, y=2]]"
    assert sandbox.run_code("twice(points.get(0).y())", language="java").text == "4"
    assert sandbox.run_code('System.getenv("FROM_CREATE") + " " + System.getenv("PER_RUN")', language="java", envs={"PER_RUN": "once"}).text == '"set-at-create once"'
    assert sandbox.run_code('System.getenv("PER_RUN")', language="java").text == "null"
    assert sandbox.run_code("int declared = 5;", language="java").results == []
    # Not the Python context's.
    assert sandbox.run_code("points").error.name == "NameError"


def test_java_errors_and_a_run_past_its_timeout(sandbox):
    thrown = sandbox.run_code("int divide(int a, int b) {\n  return a / b;\n}\ndivide(1, 0)", language="java")
    assert thrown.error.name == "java.lang.ArithmeticException"
    assert thrown.error.value == "/ by zero"
    assert "\tat divide (#" in thrown.error.traceback
    caused = sandbox.run_code('void fail() {\n  throw new RuntimeException("outer", new IllegalStateException("inner"));\n}\nfail()', language="java")
    assert caused.error.name == "java.lang.RuntimeException"
    assert "\nCaused by: java.lang.IllegalStateException: inner\n\tat fail (#" in caused.error.traceback
    refused = sandbox.run_code('int wrong = "text";', language="java")
    assert refused.error.name == "CompilationException"
    assert refused.error.value == "line 1: incompatible types: java.lang.String cannot be converted to int"
    context = sandbox.create_code_context(language="java")
    assert context.language == "java"
    sandbox.run_code('String survivor = "still here";', context=context)
    with pytest.raises(TimeoutException):
        sandbox.run_code("while (true) {}", context=context, timeout=2)
    with pytest.raises(TimeoutException):
        sandbox.run_code("Thread.sleep(60_000)", context=context, timeout=2)
    assert sandbox.run_code("survivor", context=context).text == '"still here"'
    assert sandbox.run_code("System.exit(3)", context=context).error.name == "ContextRestarting"
    sandbox.remove_code_context(context)


def test_a_java_context_reports_what_javac_refuses_or_cannot_compile_and_lives_on(sandbox):
    # The language's own context: a JVM of another context would take ~200 MB more of the 512 MiB
    # this sandbox has (config/samples/code-interpreter-pool.yaml), with the default one running.
    def java(code):
        return sandbox.run_code(code, language="java", timeout=120)

    java("int kept = 41;")
    # A declaration that waits for a later one is kept and says so.
    waiting = java("int later() { return sooner(); }")
    assert waiting.error is None
    assert waiting.logs.stderr == ["later is declared, but cannot be used until method sooner() is declared\n"]
    # javac giving up (its stack overflows on deep nesting) is the run's error, not the JVM's end.
    deep = java("int deep = %s1%s;" % ("(" * 5000, ")" * 5000))
    assert deep.error is not None
    assert deep.error.name != "ContextRestarting"
    assert java("kept + 1").text == "42"
    # JShell keeps a declaration whose error is not a missing name: the error is the run's. (Last:
    # JShell fails every later compile of the context with that one's constant, as the jshell tool
    # does; the context is restarted after.)
    too_long = java('String s = "%s";' % ("a" * 70000))
    assert too_long.error.name == "CompilationException"
    assert too_long.error.value == "line 1: constant string too long"
    for context in sandbox.list_code_contexts():
        if context.language == "java":
            sandbox.restart_code_context(context)
    assert java("1 + 1").text == "2"


def test_javascript_and_typescript_import_declarations_bind_their_names(sandbox):
    sandbox.files.write("/home/user/answer.mjs", "export const answer = 42\nexport default 'the default'\n")
    sandbox.files.write("/home/user/numbers.json", '{"numbers": [1, 2, 3]}')
    execution = sandbox.run_code(
        "import fs from 'node:fs'\nimport * as path from 'node:path'\nimport { join as joined } from 'node:path'\n"
        "import title, { answer } from './answer.mjs'\nimport data from './numbers.json' with { type: 'json' }\n"
        "[typeof fs.readFileSync, path.sep, joined('a', 'b'), title, answer, data.numbers.length]",
        language="js",
    )
    assert execution.error is None, execution.error
    assert execution.text == "[ 'function', '/', 'a/b', 'the default', 42, 3 ]"
    # The names live on; a cell importing again runs again; import() works in any cell.
    assert sandbox.run_code("import fs from 'node:fs'\nanswer + fs.readdirSync('.').length * 0", language="js").text == "42"
    assert sandbox.run_code("import('node:os').then((os) => typeof os.cpus)", language="js").text == "'function'"
    # An error keeps its line through the rewrite (the multi-line import stays on lines 1-4).
    failed = sandbox.run_code("import {\n  readFileSync,\n  existsSync,\n} from 'node:fs'\nthrow new Error('line five')", language="js")
    assert failed.error.value == "line five"
    assert "<cell>:5:" in failed.error.traceback
    missing = sandbox.run_code("import gone from './no-such-module.mjs'", language="js")
    assert "Cannot find module" in missing.error.value
    # TypeScript: imports of types only go; the others bind as in JavaScript.
    typed = sandbox.run_code(
        "import type { Stats } from 'node:fs'\nimport { statSync, type Dirent } from 'node:fs'\n"
        "const home: Stats = statSync('/home/user')\nhome.isDirectory()",
        language="ts",
    )
    assert typed.error is None, typed.error
    assert typed.text == "true"


def test_typescript_runs_with_its_types_stripped(sandbox):
    execution = sandbox.run_code(
        "interface Point { x: number; y: number }\nconst origin: Point = { x: 40, y: 2 }\nconst lift = async (p: Point): Promise<number> => p.x + p.y\nawait lift(origin)",
        language="typescript",
    )
    assert execution.error is None
    assert execution.text == "42"
    assert sandbox.run_code("enum Level { Low, High }\n(origin.x as number) + Level.High", language="ts").text == "41"
    failed = sandbox.run_code("const broken: = 1", language="ts")
    assert failed.error.name == "SyntaxError"
    assert "<cell>:1:" in failed.error.traceback
    # A stack gives the TypeScript's positions: the interface (gone) and the enum (five lines of
    # JavaScript) would move them; so in a later run calling it, and with top-level await.
    thrown = sandbox.run_code(
        "interface Shape { sides: number }\nenum Kind { Flat, Round }\nfunction check(shape: Shape): never {\n  throw new RangeError(`sides: ${shape.sides} ${Kind.Round}`)\n}\ncheck({ sides: 0 })",
        language="ts",
    )
    assert thrown.error.value == "sides: 0 1"
    assert "at check (<cell>:4:9)" in thrown.error.traceback, thrown.error.traceback
    assert "at <cell>:6:1" in thrown.error.traceback
    # An import a later cell uses (this one does not) is kept; `import type` goes.
    assert sandbox.run_code('import { basename } from "node:path"\nimport type { Stats } from "node:fs"', language="ts").error is None
    assert sandbox.run_code('basename("/a/b.txt")', language="ts").text == "'b.txt'"
    later = sandbox.run_code("type Unused = string\nawait Promise.resolve()\ncheck({ sides: 2 } as Shape)", language="ts")
    assert "at check (<cell>:4:9)" in later.error.traceback, later.error.traceback
    assert "at <cell>:3:" in later.error.traceback
