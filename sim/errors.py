"""One error type for bad input: it names the file and the field, and the CLI prints it on one line."""

from __future__ import annotations


class InputError(Exception):
    """Bad user input (scenario, profile, trace...). Printed as `error: <file>: <field>: <what>`."""

    def __init__(self, file: str, field: str, message: str):
        super().__init__(f"{file}: {field}: {message}")
        self.file = str(file)
        self.field = field
        self.message = message


class Interrupted(KeyboardInterrupt):
    """A termination signal (SIGTERM) turned into an exception, so outputs clean up as on Ctrl-C."""

    def __init__(self, signum: int):
        super().__init__(f"signal {signum}")
        self.signum = signum
