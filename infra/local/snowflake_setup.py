"""Create a database and schema in the Snowflake emulator and run SQL files in it.

Usage: python snowflake_setup.py --port PORT --database DB --schema SCHEMA FILE.sql...
"""

from __future__ import annotations

import argparse

import snowflake.connector


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--database", required=True)
    parser.add_argument("--schema", required=True)
    parser.add_argument("files", nargs="*")
    args = parser.parse_args()
    conn = snowflake.connector.connect(
        host="127.0.0.1",
        port=args.port,
        protocol="http",
        account="fakesnow",
        user="setup",
        password="local",
        network_timeout=30,
    )
    cur = conn.cursor()
    cur.execute(f"CREATE DATABASE IF NOT EXISTS {args.database}")
    cur.execute(f"CREATE SCHEMA IF NOT EXISTS {args.database}.{args.schema}")
    cur.execute(f"USE SCHEMA {args.database}.{args.schema}")
    for path in args.files:
        with open(path, encoding="utf-8") as f:
            # Comment lines may hold semicolons: drop them before splitting.
            sql = "\n".join(line for line in f if not line.strip().startswith("--"))
        for statement in sql.split(";"):
            if statement.strip():
                cur.execute(statement)
    conn.close()


if __name__ == "__main__":
    main()
