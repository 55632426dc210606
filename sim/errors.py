"""One error type for bad input: it names the file and the field, and the CLI prints it on one line."""

from __future__ import annotations


class InputError(Exception):
    """Bad user input (scenario, profile, trace...). Printed as `error: <file>: <field>: <what>`."""

    exit_code = 2

    def __init__(self, file: str, field: str, message: str):
        super().__init__(f"{file}: {field}: {message}")
        self.file = str(file)
        self.field = field
        self.message = message


class Infeasible(InputError):
    """The question has no answer within its bounds (a plan whose SLO no fleet size meets).
    Printed like an InputError; the CLI exits with code 3, not 2."""

    exit_code = 3


class Interrupted(KeyboardInterrupt):
    """A termination signal (SIGTERM) turned into an exception, so outputs clean up as on Ctrl-C."""

    def __init__(self, signum: int):
        super().__init__(f"signal {signum}")
        self.signum = signum
