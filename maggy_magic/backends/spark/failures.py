"""What a failed Spark action says, in one line.

``spark_error(exc)`` reads the exception a Spark action raised (a Py4J error carrying the
JVM's message, or a PySpark error) and returns how often a task failed and its last
error, at most 400 characters: the run's error message when the probe job or the workers'
job fails.
"""

from __future__ import annotations

import re

_ERROR_LINE = re.compile(
    r"^(?:[A-Za-z_]\w*\.)*([A-Za-z_]\w*(?:Error|Exception|Exit|Interrupt|Unreachable)): (.+)$",
    re.M)


def spark_error(exc: BaseException) -> str:
    """One line from a failed Spark action: how often a task failed and its last error."""
    texts = []
    origin = getattr(exc, "_origin", None) or getattr(exc, "java_exception", None)
    if origin is not None:
        try:
            texts.append(str(origin.getMessage() or ""))
        except Exception:  # noqa: BLE001 - the JVM may be gone
            pass
    desc = getattr(exc, "_desc", None)
    if desc:
        texts.append(str(desc))
    if not any(texts):
        texts.append(str(exc) or type(exc).__name__)
    text = "\n".join(texts)
    failed = re.search(r"Task \S+ in stage \S+ failed \d+ times", text)
    errors = _ERROR_LINE.findall(text)
    crashed = re.search(r"Python worker exited unexpectedly \(crashed\)", text)
    if errors:
        name, message = errors[-1]
        reason = f"{name}: {message.strip()}"
    elif crashed:
        reason = ("a Python worker exited unexpectedly (crashed; e.g. os._exit, a signal, or "
                  "out of memory)")
    else:
        first = next((line.strip() for line in text.splitlines() if line.strip()), "")
        first = re.sub(r"^.*?most recent failure: Lost task \S+ in stage \S+ \([^)]*\) "
                       r"\([^)]*\): ", "", first)
        first = re.sub(r"^An error occurred while calling \S+\.\s*", "", first)
        reason = first or type(exc).__name__
    line = f"{failed.group(0)}; last error: {reason}" if failed else reason
    line = " ".join(line.split())
    return line if len(line) <= 400 else line[:397] + "..."
