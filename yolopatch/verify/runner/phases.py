"""Which phase of the target's trainer is running, so that a failure of `verify --fit` names it.

The trainers differ between releases, but their phases have stable names to hook: methods of the
ultralytics trainer classes (`_setup_train`, `validate`, `save_model`, `final_eval`), YOLOv5's callback
hooks and module functions (`val.run`, `strip_optimizer`), and the EMA class both families share the shape
of (`ModelEMA.__init__` deep-copies the model, `update` averages it after each optimiser step). A Phases
object wraps those callables: while one runs, its phase is current; when an exception leaves it, the phase
it left is recorded (the innermost one: the first wrapper the exception passes through).
"""

from __future__ import annotations

import functools

SETUP, EPOCH, EMA, VALIDATION, SAVE, FINAL_EVAL, PREDICT = (
    "setup", "epoch", "EMA", "validation", "save", "final eval", "predict")
PHASES = (SETUP, EPOCH, EMA, VALIDATION, SAVE, FINAL_EVAL, PREDICT)


class Phases:
    def __init__(self, start: str = SETUP):
        self.base = start          # the phase between wrapped calls
        self.stack: list = []      # phases of the wrapped calls now running, innermost last
        self.failed_in = None      # the phase an exception left, until a wrapped call returns normally
        self.failure = None        # that exception
        self._undo: list = []

    @property
    def current(self) -> str:
        return self.stack[-1] if self.stack else self.base

    def move_to(self, phase: str) -> None:
        self.base = phase

    def where_failed(self) -> str:
        return self.failed_in or self.current

    def wrap(self, function, phase, then: str | None = None):
        """`function` running in `phase` (a name, or a callable giving one at call time); `then`: the base
        phase after it returns normally."""
        tracker = self

        @functools.wraps(function)
        def wrapped(*args, **kwargs):
            tracker.stack.append(phase() if callable(phase) else phase)
            try:
                result = function(*args, **kwargs)
            except BaseException as exc:
                if tracker.failure is not exc:   # the first wrapper it leaves is the innermost
                    tracker.failure, tracker.failed_in = exc, tracker.current
                raise
            finally:
                tracker.stack.pop()
            tracker.failure = tracker.failed_in = None   # an exception inside was handled by the target itself
            if then is not None:
                tracker.base = then
            return result

        wrapped.__yolopatch_phase__ = True
        return wrapped

    def patch(self, owner, name: str, phase, then: str | None = None) -> bool:
        """Replace owner.name (a class or module attribute) by its wrapped form until restore();
        False when the owner has no such attribute in this release."""
        if owner is None or name not in vars(owner):
            return False
        original = vars(owner)[name]
        function = original.__func__ if isinstance(original, (staticmethod, classmethod)) else original
        if not callable(function) or getattr(function, "__yolopatch_phase__", False):
            return False
        wrapped = self.wrap(function, phase, then)
        if isinstance(original, staticmethod):
            wrapped = staticmethod(wrapped)
        elif isinstance(original, classmethod):
            wrapped = classmethod(wrapped)
        setattr(owner, name, wrapped)
        self._undo.append((owner, name, original))
        return True

    def observe(self, owner, name: str, before) -> bool:
        """Call before(*args, **kwargs) ahead of every call of owner.name until restore() (no phase of its
        own: for dispatchers such as YOLOv5's Callbacks.run, whose hook names mark the phases)."""
        if owner is None or name not in vars(owner):
            return False
        original = vars(owner)[name]

        @functools.wraps(original)
        def observed(*args, **kwargs):
            before(*args, **kwargs)
            return original(*args, **kwargs)

        setattr(owner, name, observed)
        self._undo.append((owner, name, original))
        return True

    def patch_class_tree(self, base: type, name: str, phase, then: str | None = None) -> int:
        """Wrap `name` on `base` and on every subclass defining its own (a task trainer's override)."""
        count, todo, seen = 0, [base], set()
        while todo:
            cls = todo.pop()
            if cls in seen:
                continue
            seen.add(cls)
            count += self.patch(cls, name, phase, then)
            todo.extend(cls.__subclasses__())
        return count

    def restore(self) -> None:
        while self._undo:
            owner, name, original = self._undo.pop()
            setattr(owner, name, original)
