"""Auto-checks for the book's exercises, one module per chapter (same stem as the notebook).

Each ``check_*`` function takes the reader's answer and returns a :class:`Result` that shows either
"✅ ... all N cases pass" or "❌ ..., case 'name': what differed. Hint: ...", never a traceback.
"""

from ._check import Case, Result, check_value, compare, run_cases

__all__ = ["Case", "Result", "check_value", "compare", "run_cases"]
