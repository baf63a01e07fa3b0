"""SciPy's own test suite of ``linear_sum_assignment``, run against ``llfc.linear_sum_assignment``.

The file is read from the installed SciPy at run time (nothing is vendored) and executed here
with exactly one change: its ``from scipy.optimize import linear_sum_assignment`` import becomes
``from llfc import linear_sum_assignment``. pytest then collects its tests from this module.
"""

import pathlib

import scipy.optimize

import llfc

SOURCE = pathlib.Path(scipy.optimize.__file__).parent / "tests" / "test_linear_assignment.py"
IMPORT = "from scipy.optimize import linear_sum_assignment"

_text = SOURCE.read_text()
assert _text.count(IMPORT) == 1, f"{SOURCE} no longer imports the solver as expected"
exec(compile(_text.replace(IMPORT, "from llfc import linear_sum_assignment"), str(SOURCE), "exec"))


def test_the_suite_runs_llfc():
    assert linear_sum_assignment is llfc.linear_sum_assignment  # noqa: F821 (defined by exec)
    assert sum(1 for k in globals() if k.startswith("test_linear_sum") or k.startswith("test_constant")) >= 8
