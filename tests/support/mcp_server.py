"""A real MCP server (the official MCP Python SDK's MCPServer), for the tests:

    python tests/support/mcp_server.py stdio                 # over stdin/stdout
    python tests/support/mcp_server.py http PORT [NAME]      # streamable HTTP on 127.0.0.1:PORT/mcp

Tools: add (a sum), shout (text), fail (answers with isError), hang (never answers), big (a long text),
lookup (a parameter that is a pydantic model: its schema has $defs and $ref), die (ends the process; with
for_good, it never starts again in that folder), media (image, resource, link and audio parts), structured
(structured content only). BANNER=1 makes it print on stdout before it serves.
NAME (default "calc") changes only the server's name; `PREFIX=x_` in the environment prefixes tool names;
`MCP_PATH=/mcp/KEY` serves HTTP there instead (a server that takes its key in the path, as Zapier's does);
`ADD_NOTE` is appended to add's description (a server that describes a tool with its own words, a key even);
`STDERR_SAYS` is printed on stderr at the start (a server that logs its own key).
"""

from __future__ import annotations

import base64
import os
import sys
import time

from mcp.server.mcpserver import MCPServer
from mcp.types import (
    AudioContent,
    CallToolResult,
    EmbeddedResource,
    ImageContent,
    ResourceLink,
    TextResourceContents,
)
from pydantic import BaseModel

prefix = os.environ.get("PREFIX", "")
if os.path.exists("mcp-dead"):  # `die` was called with for_good: this server never starts again
    sys.exit(3)
if os.environ.get("BANNER"):  # a server that prints on stdout, where only JSON-RPC belongs
    print("Welcome to the calc server v1.0!", flush=True)
    print("Listening on stdio...", flush=True)
if os.environ.get("STDERR_SAYS"):  # a server that logs what it was given, its keys included, on stderr
    print(f"calc: starting with token {os.environ['STDERR_SAYS']}", file=sys.stderr, flush=True)
server = MCPServer(sys.argv[3] if len(sys.argv) > 3 else "calc")


class Place(BaseModel):
    city: str
    country: str = "FR"


@server.tool(name=f"{prefix}add", description="Add two integers." + os.environ.get("ADD_NOTE", ""))
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
def die(for_good: bool = False) -> str:
    if for_good:
        open("mcp-dead", "w").close()
    os._exit(3)


@server.tool(name=f"{prefix}media", description="Answers with every kind of content but text.")
def media() -> CallToolResult:
    return CallToolResult(content=[
        ImageContent(type="image", data=base64.b64encode(b"\x89PNG" + bytes(96)).decode(),
                     mime_type="image/png"),
        EmbeddedResource(type="resource", resource=TextResourceContents(uri="file:///notes.txt",
                                                                        mime_type="text/plain",
                                                                        text="the notes say 42")),
        ResourceLink(type="resource_link", name="report.pdf", uri="https://example.com/report.pdf"),
        AudioContent(type="audio", data=base64.b64encode(bytes(300)).decode(), mime_type="audio/wav")])


@server.tool(name=f"{prefix}structured", description="Answers with structured content only.")
def structured() -> CallToolResult:
    return CallToolResult(content=[], structured_content={"temperature": 21.5, "unit": "C"})


if __name__ == "__main__":
    if sys.argv[1] == "stdio":
        server.run("stdio")
    else:
        server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[2]),
                   streamable_http_path=os.environ.get("MCP_PATH", "/mcp"))
