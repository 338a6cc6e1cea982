"""The suite's own rules, each checked by a real pytest run on a tiny test file:
in CI a skip is a failure (tests/conftest.py), an unknown mark is an error
(``--strict-markers`` in pyproject.toml), and no test's timeout mark is above the
global ``timeout``."""

import os
import re
import subprocess
import sys
import textwrap

TESTS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS)

SKIPS = textwrap.dedent("""
    import pytest

    def test_passes():
        pass

    def test_skips_itself():
        pytest.skip("needs a GPU")

    @pytest.mark.skipif(True, reason="not on this platform")
    def test_skipped_by_mark():
        pass

    @pytest.mark.xfail(reason="a known bug", strict=True)
    def test_expected_failure():
        raise AssertionError("known")
""")

MODULE_SKIP = textwrap.dedent("""
    import pytest

    pytest.importorskip("no_such_module_for_maggy_tests")

    def test_never_collected():
        pass
""")


def _pytest(tmp_path, files, *args, ci=None, conftest=True):
    """Run pytest on ``files`` (name -> source) in ``tmp_path`` with the suite's conftest
    as a plugin; ``ci`` is the value of $CI (None: unset)."""
    for name, source in files.items():
        (tmp_path / name).write_text(source)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["PYTHONPATH"] = os.pathsep.join([TESTS, ROOT])
    if ci is not None:
        env["CI"] = ci
    plugin = ["-p", "conftest"] if conftest else []
    return subprocess.run(
        [sys.executable, "-m", "pytest", *plugin, "-p", "no:cacheprovider", "-rA",
         "--rootdir", str(tmp_path), *args, *files],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


def _counts(out):
    last = out.stdout.strip().splitlines()[-1]
    return {kind: int(n) for n, kind in re.findall(r"(\d+) (\w+)", last)}


def test_without_ci_skips_are_skips(tmp_path):
    out = _pytest(tmp_path, {"test_tiny.py": SKIPS})
    assert out.returncode == 0, out.stdout
    assert _counts(out) == {"passed": 1, "skipped": 2, "xfailed": 1}, out.stdout


def test_in_ci_every_skip_fails_and_says_why(tmp_path):
    out = _pytest(tmp_path, {"test_tiny.py": SKIPS}, ci="true")
    assert out.returncode == 1, out.stdout
    # a skip mark acts in the test's setup, so that one fails as an error (of setup);
    # an xfail is a decision about a known bug, not a skip: it stays xfailed
    assert _counts(out) == {"failed": 1, "error": 1, "passed": 1, "xfailed": 1}, out.stdout
    assert "test_tiny.py::test_skips_itself was skipped in CI (CI='true'), and a skip in " \
           "CI is a failure: Skipped: needs a GPU" in out.stdout
    assert "ERROR at setup of test_skipped_by_mark" in out.stdout
    assert "test_tiny.py::test_skipped_by_mark was skipped in CI (CI='true'), and a skip in " \
           "CI is a failure: Skipped: not on this platform" in out.stdout


def test_ci_set_to_false_or_empty_is_not_ci(tmp_path):
    for value in ("", "0", "false"):
        out = _pytest(tmp_path, {"test_tiny.py": SKIPS}, ci=value)
        assert out.returncode == 0 and _counts(out)["skipped"] == 2, (value, out.stdout)


def test_in_ci_a_module_skipped_at_import_fails_collection(tmp_path):
    files = {"test_tiny.py": SKIPS.replace("def test_skips_itself", "def _not_a_test")
             .replace("@pytest.mark.skipif(True", "@pytest.mark.skipif(False"),
             "test_optional.py": MODULE_SKIP}
    assert _pytest(tmp_path, files).returncode == 0
    out = _pytest(tmp_path, files, ci="1")
    assert out.returncode != 0, out.stdout
    assert "test_optional.py was skipped in CI (CI='1')" in out.stdout
    assert "could not import 'no_such_module_for_maggy_tests'" in out.stdout


def test_a_timeout_mark_above_the_global_timeout_is_a_usage_error(tmp_path):
    source = ("import pytest\n\n@pytest.mark.timeout(301)\ndef test_long():\n    pass\n\n"
              "@pytest.mark.timeout(5)\ndef test_short():\n    pass\n")
    out = _pytest(tmp_path, {"test_tiny.py": source}, "-o", "timeout=300")
    assert out.returncode == 4, out.stdout + out.stderr      # pytest's usage error
    assert "test_tiny.py::test_long: @pytest.mark.timeout(301) is above the global " \
           "timeout = 300 of pyproject.toml; lower it below 300" in out.stderr
    fine = _pytest(tmp_path, {"test_tiny.py": source.replace("301", "299")},
                   "-o", "timeout=300")
    assert fine.returncode == 0, fine.stdout
    # timeout(0) switches the timeout off: also above the global one
    off = _pytest(tmp_path, {"test_tiny.py": source.replace("301", "0")},
                  "-o", "timeout=300")
    assert off.returncode == 4 and "timeout(0) is above" in off.stderr


def test_the_suite_settings_refuse_unknown_marks_and_set_a_global_timeout(tmp_path):
    source = "import pytest\n\n@pytest.mark.slwo\ndef test_typo():\n    pass\n"
    out = _pytest(tmp_path, {"test_tiny.py": source}, "-c", os.path.join(ROOT, "pyproject.toml"),
                  conftest=False)
    assert out.returncode != 0
    assert "'slwo' not found in `markers` configuration option" in out.stdout + out.stderr
    good = _pytest(tmp_path, {"test_tiny.py": source.replace("slwo", "slow")},
                   "-c", os.path.join(ROOT, "pyproject.toml"), conftest=False)
    assert good.returncode == 0, good.stdout
    assert "timeout: 300.0s" in good.stdout                   # pytest-timeout's header
