"""A real MCP server (the official MCP Python SDK's MCPServer), for the tests:

    python tests/mcp_server.py stdio                 # over stdin/stdout
    python tests/mcp_server.py http PORT [NAME]      # streamable HTTP on 127.0.0.1:PORT/mcp

Tools: add (a sum), shout (text), fail (answers with isError), hang (never answers), big (a long text),
lookup (a parameter that is a pydantic model: its schema has $defs and $ref), die (ends the process).
NAME (default "calc") changes only the server's name; `PREFIX=x_` in the environment prefixes tool names.
"""

from __future__ import annotations

import os
import sys
import time

from pydantic import BaseModel

from mcp.server.mcpserver import MCPServer

prefix = os.environ.get("PREFIX", "")
server = MCPServer(sys.argv[3] if len(sys.argv) > 3 else "calc")


class Place(BaseModel):
    city: str
    country: str = "FR"


@server.tool(name=f"{prefix}add", description="Add two integers.")
def add(a: int, b: int) -> str:
    return str(a + b)


@server.tool(name=f"{prefix}shout", description="Upper-case a text.")
def shout(text: str) -> str:
    return text.upper()


@server.tool(name=f"{prefix}fail", description="Always fails.")
def fail(reason: str = "broken on purpose") -> str:
    raise ValueError(reason)


@server.tool(name=f"{prefix}hang", description="Never answers.")
def hang() -> str:
    open("mcp-hang-started", "w").close()  # in the run's directory: a test knows the call arrived
    time.sleep(3600)
    return "never"


@server.tool(name=f"{prefix}big", description="A long text.")
def big(n: int) -> str:
    return "x" * n


@server.tool(name=f"{prefix}lookup", description="Where is it?")
def lookup(place: Place) -> str:
    return f"{place.city}, {place.country}"


@server.tool(name=f"{prefix}die", description="Ends the server process.")
def die() -> str:
    os._exit(3)


if __name__ == "__main__":
    if sys.argv[1] == "stdio":
        server.run("stdio")
    else:
        server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[2]))
