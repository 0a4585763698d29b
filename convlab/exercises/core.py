"""The machinery every exercise shares: ``check()``, ``hint()``, ``solution()``.

In the style of Kaggle's learntools: a student writes a function, passes it to
``exercise.check(fn)`` and reads one verdict:

* **Correct** -- every case matched values computed independently (convlab's
  float64 oracle or straightforward NumPy);
* **Incorrect** -- which case failed, what was expected, what came back, and,
  when the answer matches a classic mistake (a flipped kernel, ceil instead of
  floor, stride on the wrong axis...), which one;
* **Not attempted** -- ``fn`` is None, still raises ``NotImplementedError``, or
  returns None / ``...`` on the first case.

``check`` prints the verdict and returns None, so a check cell shows the message and
nothing after it; the verdict is kept in ``last_status`` ("correct", "incorrect",
"not attempted") and its text in ``last_message``, for notebooks, tests and scripts to read.

**Hints come in three tiers.** ``hint()`` is a nudge (which idea to use), ``hint(2)``
says more (the structure of an answer), ``hint(3)`` nearly gives the answer away (the
formula or the loop nest, without the finished code); ``solution()`` is the last resort.
An exercise states its tiers as ``hints = (nudge, more, nearly)``: the base class refuses
a subclass that does not give exactly three, so a new exercise cannot forget one.

**Grading.** When the environment variable ``CONVLAB_OUTCOMES`` names a file, every
``check`` also appends its verdict to that file as one JSON line (``{"exercise": ...,
"result": ..., "message": ...}``): the structured channel ``convlab grade`` reads, so a
grader never parses printed text. Nothing is written when the variable is unset. The
student's code runs in the same process and can write such lines too, so a grader takes
the verdict as feedback text only: ``convlab grade`` decides from answers to cases of its
own (docs/design.md, "Grading").
"""

from __future__ import annotations

import inspect
import json
import os
import sys
import textwrap
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

OUTCOMES_ENV = "CONVLAB_OUTCOMES"
RESULTS = ("correct", "incorrect", "not attempted")
HINT_TIERS = ("a nudge", "more", "nearly the answer")


def record_outcome(exercise: str, result: str, message: str) -> None:
    """Append one check's verdict to the file named by ``$CONVLAB_OUTCOMES`` (if set).

    One ``json.dumps`` line per call, written with a single ``write`` on a file opened for
    appending, so lines from one process never interleave. A file that cannot be written
    costs a warning on stderr, never the student's notebook.
    """
    path = os.environ.get(OUTCOMES_ENV)
    if not path:
        return
    # the line's schema is the grader's (only loaded when grading: the env var is set)
    from ..grading.wire import Outcome

    line = json.dumps(Outcome(exercise, result, message).line()) + "\n"
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(line)
    except OSError as err:
        print(f"convlab: could not record the verdict in ${OUTCOMES_ENV}={path!r}: {err}",
              file=sys.stderr)


class NotAttempted(Exception):
    """The student has not written an answer yet."""


class Incorrect(Exception):
    """The answer is wrong; the message says where and, if it can, why."""


def call(fn: Any, args: dict[str, Any], where: str, first: bool) -> Any:
    """Call the student's ``fn(**args)`` positionally, turning each way of not
    answering into :class:`NotAttempted` and a crash into :class:`Incorrect`."""
    if fn is None:
        raise NotAttempted("you passed None; define your function and pass it to check()")
    if not callable(fn):
        kind = type(fn).__name__
        raise Incorrect(f"check() needs your function, got {article(kind)} {kind}: pass the "
                        "name you defined with def, without calling it")
    copies = {k: v.copy() if isinstance(v, np.ndarray) else v for k, v in args.items()}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. Numba's "parallel=True but nothing to do"
            result = fn(*copies.values())
    except NotImplementedError:
        raise NotAttempted("your function still raises NotImplementedError: replace that "
                           "line with your code") from None
    except Exception as err:  # the student's bug: report it, don't crash the notebook
        raise Incorrect(f"{where}: your function raised {type(err).__name__}: "
                        f"{short(str(err))}") from None
    if result is None or result is Ellipsis:
        if first:
            raise NotAttempted(f"your function returned {result!r}: write your code and "
                               "return the answer")
        raise Incorrect(f"{where}: your function returned {result!r}")
    for name, value in args.items():
        if isinstance(value, np.ndarray) and not np.array_equal(value, copies[name],
                                                                equal_nan=True):
            raise Incorrect(f"{where}: your function changed its input {name!r} in place; "
                            "work on a copy (np.pad, for example, returns a new array)")
    return result


def article(word: str) -> str:
    """'a' or 'an' before ``word`` (by its first letter: good enough for type names)."""
    return "an" if word[:1].lower() in "aeiou" else "a"


def short(text: str, lines: int = 12) -> str:
    """The first lines of a (possibly huge, e.g. Numba typing) error message."""
    rows = text.strip().splitlines()
    return "\n".join(rows[:lines] + (["..."] if len(rows) > lines else []))


def compare_arrays(got: Any, expected: np.ndarray, where: str,
                   mistakes: Sequence[tuple[str, Callable[[], np.ndarray | None]]] = (),
                   rtol: float = 1e-6) -> None:
    """Raise :class:`Incorrect` unless ``got`` equals ``expected`` to ``rtol`` of its
    largest value; name the first classic mistake whose result ``got`` matches."""
    try:
        arr = np.asarray(got, dtype=np.float64)
    except (TypeError, ValueError):
        raise Incorrect(f"{where}: expected an array, got {type(got).__name__}") from None
    scale = max(1.0, float(np.max(np.abs(expected), initial=0.0)))
    if arr.shape == expected.shape and np.allclose(arr, expected, rtol=0, atol=rtol * scale):
        return
    for why, make in mistakes:
        alt = make()
        if alt is not None and alt.shape == arr.shape and np.allclose(arr, alt, rtol=0,
                                                                      atol=rtol * scale):
            raise Incorrect(f"{where}: {why}")
    if arr.shape != expected.shape:
        raise Incorrect(f"{where}: your result has shape {arr.shape}, expected "
                        f"{expected.shape}")
    bad = np.abs(np.nan_to_num(arr, nan=np.inf) - expected)
    at = np.unravel_index(int(np.argmax(bad)), bad.shape)
    n_bad = int(np.count_nonzero(~(bad <= rtol * scale)))
    raise Incorrect(f"{where}: {n_bad} of {arr.size} values are wrong; the worst is at index "
                    f"{tuple(int(i) for i in at)}: you have {arr[at]:.6g}, expected "
                    f"{expected[at]:.6g}")


def source_of(fn: Callable[..., Any]) -> str:
    """The source of a plain, ``@njit`` or ``@cuda.jit`` function.

    Raises OSError when Python kept none: a function typed at the interactive prompt
    (its file is ``<stdin>``) or built by ``exec``.
    """
    for attr in ("py_func", "fn", "__wrapped__"):
        inner = getattr(fn, attr, None)
        if callable(inner):
            fn = inner
            break
    return textwrap.dedent(inspect.getsource(fn))


class Exercise:
    """One exercise.  Subclasses set the texts and implement :meth:`_check`.

    ``hints`` holds three tiers, from a nudge to nearly the answer (see the module
    docstring); every subclass with a ``name`` must give exactly three.
    """

    name: str = ""
    title: str = ""
    task: str = ""  # what to write: the signature and the rules
    hints: tuple[str, str, str] = ("", "", "")  # a nudge, more, nearly the answer
    praise: str = "Correct!"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "hint_text" in vars(cls):
            raise TypeError(f"{cls.__name__}: hint_text is gone; give hints = (a nudge, "
                            "more, nearly the answer): three strings")
        hints = getattr(cls, "hints", ())
        if cls.name and not (isinstance(hints, tuple) and len(hints) == len(HINT_TIERS)
                             and all(isinstance(h, str) and h.strip() for h in hints)
                             and len(set(hints)) == len(hints)):
            raise TypeError(f"{cls.__name__}: hints must be a tuple of {len(HINT_TIERS)} "
                            f"different, non-empty strings ({', '.join(HINT_TIERS)}); got "
                            f"{hints!r}")

    def __init__(self) -> None:
        self.last_status: str | None = None
        self.last_message: str | None = None

    # --------------------------------------------------------------- public
    def check(self, fn: Any) -> None:
        """Run every case and print the verdict; ``last_status`` and ``last_message`` keep
        it (and ``$CONVLAB_OUTCOMES``, when set, gets it as a JSON line).

        Returns None on purpose: a notebook cell ending in ``check(...)`` shows the
        message alone, not the message followed by ``False``.
        """
        try:
            note = self._check(fn)
        except NotAttempted as why:
            status, text = "not attempted", f"Not attempted yet ({self.name}): {why}"
        except Incorrect as why:
            # the notebooks and the README import the exercises as `ex`; the student's
            # own function often has the exercise's name, so name the real call
            status = "incorrect"
            text = f"Incorrect ({self.name}): {why}\n(Stuck? Call ex.{self.name}.hint().)"
        else:
            status, text = "correct", f"Correct ({self.name}): {note or self.praise}"
        self.last_status, self.last_message = status, text
        print(text)
        record_outcome(self.name, status, text)

    def hint(self, level: int = 1) -> None:
        """Print hint ``level``: 1 a nudge, 2 more, 3 nearly the answer."""
        tiers = len(self.hints)
        if isinstance(level, bool) or not isinstance(level, int) or not 1 <= level <= tiers:
            raise ValueError(f"hint level must be 1 (a nudge), 2 (more) or 3 (nearly the "
                             f"answer); got {level!r}")
        more = (f"\n(More: ex.{self.name}.hint({level + 1}).)" if level < tiers else
                f"\n(That is the last hint; ex.{self.name}.solution() shows an answer.)")
        print(f"Hint {level}/{tiers} ({self.name}): {self.hints[level - 1]}{more}")

    def solution(self, show: bool = True) -> Callable[..., Any]:
        """Print the reference solution's source (unless ``show=False``); return it."""
        fn = self._solution()
        if show:
            print(f"Solution ({self.name}):\n\n{source_of(fn)}")
        return fn

    def __repr__(self) -> str:
        return f"<exercise {self.name}: {self.title}>"

    def __str__(self) -> str:
        return f"{self.title}\n\n{self.task}"

    # --------------------------------------------------------------- to implement
    def _check(self, fn: Any) -> str | None:
        """Raise NotAttempted or Incorrect, or return None (the verdict is "Correct" with
        :attr:`praise`) or a text said instead of the praise (e.g. what could not be
        checked)."""
        raise NotImplementedError

    def _solution(self) -> Callable[..., Any]:
        raise NotImplementedError
