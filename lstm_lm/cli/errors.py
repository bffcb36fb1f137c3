"""The one place where the library's errors become what the user sees: one line and an exit
code. LMError -> exit 1, OptionError (settings that do not go together) -> a usage error,
exit 2, exhausted memory -> exit 1, output that cannot be written -> exit 1 (or silence for
a reader that went away), Ctrl-C -> exit 130; under mpiexec an error one rank met ends them
all."""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import sys

import click

from lstm_lm import LMError, OptionError, parallel
from lstm_lm.parallel import RanksError


def library_errors(fn):
    """One line and an honest exit code for what a user can cause: the library's LMError and
    exhausted memory (exit 1), output that cannot be written (a full disk: exit 1; a reader
    that went away, as with `| head`: silently), Ctrl-C (exit 130)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            result = fn(*args, **kwargs)
            sys.stdout.flush()
            return result
        except RanksError as e:  # raised on every rank together: rank 0 says it
            raise click.ClickException(str(e)) from None
        except OptionError as e:  # options that do not go together: a usage error
            raise click.UsageError(str(e)) from None
        except LMError as e:
            end_other_ranks(str(e))
            raise click.ClickException(str(e)) from None
        except MemoryError as e:
            end_other_ranks(f"out of memory ({e}); use a smaller model")
            raise click.ClickException(f"out of memory ({e}); use a smaller model") from None
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)
        except OSError as e:
            if e.filename is not None:  # not an output stream
                raise
            _silence_stdout()
            if e.errno == errno.EPIPE:
                sys.exit(1)
            raise click.ClickException(f"cannot write the output: {e.strerror}") from None

    return wrapper


def end_other_ranks(message: str) -> None:
    """Under mpiexec, an error that only this rank may have met ends every rank (the others
    could be waiting for it in a collective): the message, then MPI_Abort."""
    world = parallel.world()
    if world.size > 1:
        world.fail(message)


def _silence_stdout() -> None:
    """Point stdout at the null device, so that the interpreter's last flush of what is
    still buffered does not fail a second time."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # no file descriptor (as under CliRunner)
        pass


def usage_errors(fn, *args):
    """fn(*args), an LMError in it being a usage error (exit 2): options that do not go
    together or a value out of range."""
    try:
        return fn(*args)
    except LMError as e:
        raise click.UsageError(str(e)) from None


@contextlib.contextmanager
def start_up_errors():
    """Errors of the command group's start-up (finding the ranks): raised on every rank
    before any can be told, so one line and exit 1 without ending the others."""
    try:
        yield
    except LMError as e:
        raise click.ClickException(str(e)) from None
