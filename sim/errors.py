"""One error type for bad input: it names the file and the field, and the CLI prints it on one line."""

from __future__ import annotations


class InputError(Exception):
    """Bad user input (scenario, profile, trace...). Printed as `error: <file>: <field>: <what>`
    (`<file>:<line>:<col>` when the field's place in the file is known)."""

    exit_code = 2

    def __init__(self, file: str, field: str, message: str, line: int | None = None,
                 col: int | None = None):
        self.file = str(file)
        self.field = field
        self.message = message
        self.line, self.col = line, col  # 1-based, of the field's key in the file, when known
        super().__init__(f"{self.where}: {field}: {message}")

    def __reduce__(self):
        # rebuilt from its fields, so it crosses a process pool (a worker's bad input reaches
        # the CLI as this error, not as a broken pool)
        return (self.__class__, (self.file, self.field, self.message, self.line, self.col))

    def one_line(self) -> str:
        """The one line the CLI prints: `error: <where>: <field>: <what>`, newlines flattened
        (a message may quote the input), at most 2000 characters."""
        return " ".join(f"error: {self.where}: {self.field}: {self.message}".split("\n"))[:2000]

    @property
    def where(self) -> str:
        """`file` or `file:line:col`, as compilers print it (editors jump to it)."""
        return self.file if self.line is None else f"{self.file}:{self.line}:{self.col}"


class Infeasible(InputError):
    """The question has no answer within its bounds (a plan whose SLO no fleet size meets).
    Printed like an InputError; the CLI exits with code 3, not 2."""

    exit_code = 3


class Interrupted(KeyboardInterrupt):
    """A termination signal (SIGTERM) turned into an exception, so outputs clean up as on Ctrl-C."""

    def __init__(self, signum: int):
        super().__init__(f"signal {signum}")
        self.signum = signum


def did_you_mean(word: object, choices) -> str:
    """'; did you mean 'burst'?' when one of `choices` is close to `word`, else '': the one
    spelling of the suggestion every bad-input message makes."""
    import difflib

    if not isinstance(word, str):
        return ""
    near = difflib.get_close_matches(word, sorted(str(c) for c in choices), n=1)
    return f"; did you mean {near[0]!r}?" if near else ""
