"""Shared test setup."""

from cats.base.threads import set_threads

set_threads()  # tests may run beside other torch processes; see cats.base.threads


def pytest_configure(config) -> None:
    config.addinivalue_line(
        "markers",
        "bitexact: compares integer outputs bit for bit with the cats.quant.qref reference",
    )
