"""Shared test setup."""

from cats.cli import set_threads

set_threads()  # tests may run beside other torch processes; see cats.cli.set_threads
