"""Fixtures of the store tests: a real PostgreSQL server for the session, a fresh database per test."""
from __future__ import annotations

import itertools

import pytest

_names = itertools.count()


@pytest.fixture(scope="session")
def postgres():
    from postgres_server import PostgresServer

    server = PostgresServer.start()      # cannot start: the tests fail with the reason
    yield server
    server.stop()


@pytest.fixture
def pg_url(postgres) -> str:
    return postgres.create_database(f"dfs_{next(_names)}")
