"""A stdio MCP server, in raw JSON-RPC, that lists a tool only to clients declaring the sampling
capability, as the reference server-everything does (modelcontextprotocol/servers, src/everything: its
sampling and elicitation tools are registered only when the client's capabilities include them). Its
`ask_model` tool asks the client to sample, and answers with what the client said."""

import json
import sys

capabilities: dict = {}
pending: dict = {}  # our request id -> the tools/call id waiting on it


def send(message: dict) -> None:
    print(json.dumps({"jsonrpc": "2.0", **message}), flush=True)


TOOL = {"type": "object", "properties": {}}
for line in sys.stdin:
    message = json.loads(line)
    method, ident = message.get("method"), message.get("id")
    if method is None and ident in pending:  # the client's answer to our sampling request
        call = pending.pop(ident)
        error = message.get("error")
        text = f"the client refused: {error.get('message')}" if error else json.dumps(message.get("result"))
        send({"id": call, "result": {"content": [{"type": "text", "text": text}], "isError": bool(error)}})
    elif method == "initialize":
        capabilities = message["params"].get("capabilities") or {}
        version = message["params"].get("protocolVersion", "2025-06-18")
        send({"id": ident, "result": {"protocolVersion": version, "capabilities": {"tools": {}},
                                      "serverInfo": {"name": "gated", "version": "1"}}})
    elif method == "tools/list":
        tools = [{"name": "echo", "description": "Echo.", "inputSchema": TOOL}]
        if "sampling" in capabilities:
            tools.append({"name": "ask_model", "description": "Ask the client's model.", "inputSchema": TOOL})
        send({"id": ident, "result": {"tools": tools}})
    elif method == "tools/call":
        if message["params"]["name"] == "ask_model":
            pending[f"s{ident}"] = ident
            send({"id": f"s{ident}", "method": "sampling/createMessage",
                  "params": {"messages": [{"role": "user", "content": {"type": "text", "text": "hi"}}],
                             "maxTokens": 5}})
        else:
            send({"id": ident, "result": {"content": [{"type": "text", "text": "echo"}], "isError": False}})
    elif ident is not None:
        send({"id": ident, "result": {}})
