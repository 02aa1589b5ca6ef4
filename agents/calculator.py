"""Arithmetic for the `calculate` tool, parsed, never evaluated: a model's expression is untrusted.

Only numbers, + - * / // % ** (and ^ for a power, as people write it), unary signs and
parentheses are understood; names, calls, attributes and everything else are refused. Sizes are
bounded so that one expression cannot take the worker's CPU or memory (`9**9**9` is refused, not
computed).
"""

import ast
import math
import operator
from collections.abc import Callable

MAX_CHARS = 500
MAX_DEPTH = 40
MAX_EXPONENT = 1000
MAX_DIGITS = 400  # of any intermediate integer

Number = int | float


class CalculationError(ValueError):
    """The expression is not arithmetic this tool computes; the message says why, in plain words."""


_BINARY: dict[type[ast.operator], Callable[[Number, Number], Number]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[Number], Number]] = {ast.UAdd: operator.pos, ast.USub: operator.neg}


def calculate(expression: str) -> Number:
    if not isinstance(expression, str) or not expression.strip():
        raise CalculationError("Give an arithmetic expression, such as (12 + 30) * 2.")
    if len(expression) > MAX_CHARS:
        raise CalculationError(f"The expression is longer than {MAX_CHARS} characters.")
    try:
        tree = ast.parse(expression.replace("^", "**"), mode="eval")
    except SyntaxError:
        raise CalculationError("That is not an arithmetic expression.") from None
    return _value(tree.body, 0)


def _value(node: ast.AST, depth: int) -> Number:
    if depth > MAX_DEPTH:
        raise CalculationError("The expression is nested too deeply.")
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return _checked(node.value)
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _checked(_UNARY[type(node.op)](_value(node.operand, depth + 1)))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _value(node.left, depth + 1), _value(node.right, depth + 1)
        if isinstance(node.op, ast.Pow) and abs(right) > MAX_EXPONENT:
            raise CalculationError(f"Exponents are limited to {MAX_EXPONENT}.")
        try:
            return _checked(_BINARY[type(node.op)](left, right))
        except ZeroDivisionError:
            raise CalculationError("Division by zero.") from None
        except OverflowError:
            raise CalculationError("The result is too large.") from None
    raise CalculationError("Only numbers, + - * / // % ** and parentheses are understood.")


def _checked(value: Number | complex) -> Number:
    if isinstance(value, complex):
        raise CalculationError("The result is not a real number.")
    if isinstance(value, int) and abs(value) >= 10**MAX_DIGITS:
        raise CalculationError("The result is too large.")
    if isinstance(value, float) and not math.isfinite(value):
        raise CalculationError("The result is too large.")
    return value


def as_text(value: Number) -> str:
    """The result as a person reads it: no float noise such as 0.30000000000000004."""
    return f"{value:.12g}" if isinstance(value, float) else str(value)
