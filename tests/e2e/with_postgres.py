"""Runs a command with a PostgreSQL server of its own: LOWBIT_TEST_POSTGRES holds its URI.
Usage: with_postgres.py COMMAND [ARGS...]"""
import os
import subprocess
import sys

from postgres_server import Postgres

pg = Postgres()
try:
    code = subprocess.call(sys.argv[1:], env=dict(os.environ, LOWBIT_TEST_POSTGRES=pg.uri))
finally:
    pg.close()
sys.exit(code)
