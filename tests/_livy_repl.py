"""The process behind one session of the Livy test server (``livy_server.py``).

It behaves like the Python interpreter of an Apache Livy session: it starts a real
SparkSession, then executes statements one at a time in a namespace that holds ``spark``,
``sc`` and ``sqlContext``, with ``sys.stdout``/``sys.stderr`` captured into a buffer that is
returned, stripped, as the statement's ``text/plain`` output when the statement ends. The
last statement of a cell that is an expression has its ``repr`` printed, like an
interactive shell; Livy's ``%json name`` and ``%table name`` magic lines give
``application/json`` and ``application/vnd.livy.table.v1+json`` output. As in Livy, the
buffer is only drained by a statement that succeeds:
text printed by a failing statement, or by a background thread between statements, shows up
in the output of the next successful one.

Protocol (JSON, one object a line, never pickle): the server writes commands to the file
descriptor ``argv[1]`` and reads messages from ``argv[2]``.

* command ``{"type": "start", "master", "conf", "app_name", "py_files"}`` (first, once)
  -> message ``{"type": "ready", "app_id", "spark_ui_url"}``
  (or ``{"type": "failed", "error"}``, then the process exits);
* command ``{"type": "execute", "id", "kind": "pyspark"|"sql", "code"}``
  -> message ``{"type": "result", "id", "output": <Livy statement output>}``;
  while it runs, ``{"type": "progress", "id", "progress"}`` messages follow Spark's tasks;
* command ``{"type": "shutdown"}`` -> the SparkSession stops and the process exits.

SIGINT interrupts the statement being executed: Python code gets ``KeyboardInterrupt``; a
statement waiting for the JVM (a Spark job) has its jobs cancelled from another thread, so
the call fails with Spark's cancellation error (the waiting thread's py4j connection cannot
carry a second call). Between statements SIGINT is ignored. The process's
own stdout/stderr (Spark's log) are the session log the server collects.
"""

import ast
import io
import json
import os
import signal
import sys
import threading
import traceback

STATEMENT_FILE = "<stdin>"
SQL_MAX_ROWS = 1000
PROGRESS_INTERVAL = 0.5


class _Capture(io.TextIOBase):
    """A thread-safe text buffer that stands in for ``sys.stdout`` and ``sys.stderr``."""

    def __init__(self, lock: threading.Lock, parts: list):
        self._lock = lock
        self._parts = parts

    @property
    def encoding(self):
        return "utf-8"

    def writable(self):
        return True

    def isatty(self):
        return False

    def write(self, text):
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        with self._lock:
            self._parts.append(text)
        return len(text)

    def flush(self):
        pass


class _Output:
    """What statements print: stdout first, then stderr, like Livy's interpreter."""

    def __init__(self):
        self._lock = threading.Lock()
        self._out, self._err = [], []
        self.stdout = _Capture(self._lock, self._out)
        self.stderr = _Capture(self._lock, self._err)

    def drain(self) -> str:
        with self._lock:
            text = "".join(self._out) + "".join(self._err)
            self._out.clear()
            self._err.clear()
        return text


class _Channel:
    """JSON lines to and from the server."""

    def __init__(self, read_fd: int, write_fd: int):
        self._reader = os.fdopen(read_fd, "rb")
        self._writer = os.fdopen(write_fd, "wb")
        self._lock = threading.Lock()

    def receive(self):
        line = self._reader.readline()
        return json.loads(line) if line else None

    def send(self, message: dict) -> None:
        data = json.dumps(message).encode() + b"\n"
        with self._lock:
            self._writer.write(data)
            self._writer.flush()


def _error_output(exc: BaseException, user_frames: bool = True) -> dict:
    """Livy's error output: name, value and a traceback that starts at the user's code."""
    tb = exc.__traceback__
    if user_frames:
        while tb is not None and tb.tb_frame.f_code.co_filename != STATEMENT_FILE:
            tb = tb.tb_next
    else:
        tb = None
    lines = traceback.format_exception(type(exc), exc, tb, chain=False)
    return {"status": "error", "ename": type(exc).__name__, "evalue": str(exc),
            "traceback": lines}


def _run_python(code: str, namespace: dict) -> dict:
    """Execute a cell; returns the extra output data of its last magic line, if any.

    Every node but the last runs as a module, the last interactively (its value printed).
    A cell that does not parse is split into Python chunks and Livy's magic lines
    (``%json name``, ``%table name``), which are run in order.
    """
    try:
        chunks = [ast.parse(code, STATEMENT_FILE, "exec")]
    except SyntaxError:
        chunks = _split_magics(code)
    data = {}
    for chunk in chunks:
        if isinstance(chunk, str):
            data = _run_magic(chunk, namespace)
            continue
        body, last = chunk.body[:-1], chunk.body[-1:]
        for node in body:
            exec(compile(ast.Module([node], []), STATEMENT_FILE, "exec"), namespace)
        for node in last:
            exec(compile(ast.Interactive([node]), STATEMENT_FILE, "single"), namespace)
        data = {}
    return data


class UnknownMagic(Exception):
    """A ``%`` line that names no magic of Livy's Python interpreter."""


def _split_magics(code: str) -> list:
    """Python chunks (parsed; a SyntaxError propagates) and magic lines, in order."""
    chunks, pending = [], []
    for line in code.rstrip().split("\n"):
        if line.startswith("%"):
            if pending:
                chunks.append("\n".join(pending))
                pending = []
            chunks.append(line)
        else:
            pending.append(line)
    if pending:
        chunks.append("\n".join(pending))
    return [chunk if chunk.startswith("%") else ast.parse(chunk, STATEMENT_FILE, "exec")
            for chunk in chunks]


def _run_magic(line: str, namespace: dict) -> dict:
    name, _, argument = line[1:].partition(" ")
    if name == "json":
        return {"application/json": namespace[argument.strip()]}
    if name == "table":
        return {"application/vnd.livy.table.v1+json": _table(namespace[argument.strip()])}
    raise UnknownMagic(f"unknown magic command '{name}'" if name
                       else "magic command not specified")


_TABLE_TYPES = ((bool, "BOOLEAN_TYPE"), (int, "INT_TYPE"), (float, "DOUBLE_TYPE"),
                (type(None), "NULL_TYPE"))


def _table_cell(value):
    for python_type, livy_type in _TABLE_TYPES:
        if isinstance(value, python_type):
            return livy_type, value
    if isinstance(value, (list, tuple)):
        return "ARRAY_TYPE", [_table_cell(item)[1] for item in value]
    if isinstance(value, dict):
        return "MAP_TYPE", {key: _table_cell(item)[1] for key, item in value.items()}
    return "STRING_TYPE", str(value)


def _table(value) -> dict:
    """Rows (Spark Rows, dicts, sequences or scalars) as Livy's table: headers and data."""
    rows = value if isinstance(value, (list, tuple)) else [value]
    headers, data = {}, []
    for row in rows:
        if type(row).__name__ == "Row":
            row = row.asDict()
        if not isinstance(row, (list, tuple, dict)):
            row = [row]
        cells = sorted(row.items()) if isinstance(row, dict) else list(enumerate(row))
        values = []
        for key, cell in cells:
            cell_type, cell = _table_cell(cell)
            header = headers.setdefault(key, {"name": str(key), "type": cell_type})
            if header["type"] == "NULL_TYPE":
                header["type"] = cell_type
            elif cell_type not in ("NULL_TYPE", header["type"]):
                raise TypeError("table rows have different types")
            values.append(cell)
        data.append(values)
    return {"headers": [headers[key] for key in sorted(headers, key=str)], "data": data}


def _run_sql(code: str, spark) -> dict:
    """A SQL statement's result as Livy's SQL interpreter gives it (``application/json``)."""
    frame = spark.sql(code)
    rows = frame.take(SQL_MAX_ROWS)
    return {"schema": frame.schema.jsonValue(), "data": [list(row) for row in rows]}


class _Progress(threading.Thread):
    """Reports the share of finished tasks of the running statement's Spark jobs."""

    def __init__(self, channel: _Channel, sc):
        super().__init__(daemon=True, name="statement-progress")
        self._channel = channel
        self._tracker = sc.statusTracker()
        self._current = None
        self._wake = threading.Event()

    def follow(self, statement_id):
        self._current = statement_id
        self._wake.set()

    def run(self):
        last = None
        while True:
            statement_id = self._current
            if statement_id is None:
                self._wake.wait()
                self._wake.clear()
                last = None
                continue
            try:
                progress = self._measure(statement_id)
            except Exception:  # the JVM may be going away; progress is best effort
                progress = None
            if progress is not None and progress != last and self._current == statement_id:
                last = progress
                self._channel.send({"type": "progress", "id": statement_id,
                                    "progress": progress})
            self._wake.wait(PROGRESS_INTERVAL)
            self._wake.clear()

    def _measure(self, statement_id):
        done = total = 0
        for job_id in self._tracker.getJobIdsForGroup(_job_group(statement_id)):
            job = self._tracker.getJobInfo(job_id)
            if job is None:
                continue
            for stage_id in job.stageIds:
                stage = self._tracker.getStageInfo(stage_id)
                if stage is not None:
                    done += stage.numCompletedTasks
                    total += stage.numTasks
        return round(done / total, 4) if total else None


class _Canceller(threading.Thread):
    """Cancels every Spark job on request, from its own thread (and JVM connection)."""

    def __init__(self, sc):
        super().__init__(daemon=True, name="statement-canceller")
        self._sc = sc
        self._requested = threading.Event()

    def request(self):
        self._requested.set()

    def run(self):
        while True:
            self._requested.wait()
            self._requested.clear()
            try:
                self._sc.cancelAllJobs()
            except Exception as exc:  # the JVM may be going away
                print(f"cancelling Spark jobs failed: {exc}", file=sys.__stderr__)


def _inside_py4j(frame) -> bool:
    """Whether the interrupted code is waiting in a call into the JVM."""
    marker = os.sep + "py4j" + os.sep
    while frame is not None:
        if marker in frame.f_code.co_filename:
            return True
        frame = frame.f_back
    return False


def _job_group(statement_id) -> str:
    return f"livy-statement-{statement_id}"


def _start_spark(command: dict):
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.master(command["master"]).appName(command["app_name"])
    for key, value in command["conf"].items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    for path in command.get("py_files") or []:
        spark.sparkContext.addPyFile(path)
    return spark


def _namespace(spark) -> dict:
    namespace = {"__name__": "__main__", "__builtins__": __builtins__,
                 "spark": spark, "sc": spark.sparkContext}
    try:
        from pyspark.sql import SQLContext

        namespace["sqlContext"] = SQLContext(spark.sparkContext, spark)
    except Exception:  # older or newer pysparks without a usable SQLContext
        pass
    return namespace


def main() -> int:
    channel = _Channel(int(sys.argv[1]), int(sys.argv[2]))
    command = channel.receive()
    if command is None or command.get("type") != "start":
        return 2
    try:
        spark = _start_spark(command)
    except Exception as exc:
        traceback.print_exc()
        channel.send({"type": "failed", "error": f"{type(exc).__name__}: {exc}"})
        return 1
    sc = spark.sparkContext
    namespace = _namespace(spark)

    executing = threading.Event()
    canceller = _Canceller(sc)
    canceller.start()

    def on_sigint(signum, frame):
        if not executing.is_set():
            return
        if _inside_py4j(frame):
            # the thread's JVM connection is busy with this call: cancel its Spark jobs
            # from another thread and let the call fail with Spark's cancellation error
            canceller.request()
            return
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_sigint)
    progress = _Progress(channel, sc)
    progress.start()
    channel.send({"type": "ready", "app_id": sc.applicationId, "spark_ui_url": sc.uiWebUrl})

    output = _Output()
    real_stdout, real_stderr = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = output.stdout, output.stderr
    execution_count = 0
    try:
        while True:
            command = channel.receive()
            if command is None or command.get("type") == "shutdown":
                break
            if command.get("type") != "execute":
                print(f"unknown command {command.get('type')!r}", file=real_stderr)
                continue
            statement_id = command["id"]
            sc.setJobGroup(_job_group(statement_id), f"Livy statement {statement_id}")
            progress.follow(statement_id)
            try:
                try:
                    executing.set()
                    if command.get("kind") == "sql":
                        data = {"application/json": _run_sql(command["code"], spark)}
                    else:
                        data = _run_python(command["code"], namespace)
                finally:
                    executing.clear()
            except (SyntaxError, UnknownMagic) as exc:
                result = _error_output(exc, user_frames=False)
            except BaseException as exc:  # the statement's failure is its output
                result = _error_output(exc)
            else:
                text = (data.pop("text/plain", "") + output.drain()).rstrip()
                if text or not data:
                    data["text/plain"] = text
                result = {"status": "ok", "data": data}
            progress.follow(None)
            result["execution_count"] = execution_count
            execution_count += 1
            channel.send({"type": "result", "id": statement_id, "output": result})
    finally:
        sys.stdout, sys.stderr = real_stdout, real_stderr
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
