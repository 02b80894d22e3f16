"""Small python-zeroconf and launcher programs the discovery bench runs in lab hosts."""

from __future__ import annotations

# -- helper processes (run in lab hosts with ``python -c``) --------------------------------

# Starts a meshdesk node: argv = BOUND_S, then meshdesk's own arguments. Prints when
# Python runs and when meshdesk is imported, in the same JSON-lines log as the node.
# After BOUND_S it sends itself SIGTERM, so a node never outlives a dead bench for long.
NODE_LAUNCHER = r"""
import time
T = time.time()
import json, os, signal, sys
def mark(msg, t):
    print(json.dumps({"t": t, "logger": "bench", "msg": msg}), file=sys.stderr, flush=True)
signal.signal(signal.SIGALRM, lambda *_: os.kill(os.getpid(), signal.SIGTERM))
signal.alarm(int(sys.argv[1]))
mark("python running", T)
from meshdesk.cli import main
mark("meshdesk imported", time.time())
sys.exit(main(sys.argv[2:]))
"""

ZC_COMMON = r"""
import time
T = time.time()
import asyncio, contextlib, json, signal, sys
from zeroconf import IPVersion, ServiceStateChange
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf
START = time.time()
def emit(event, **fields):
    print(json.dumps({"event": event, "t": time.time(), **fields}), flush=True)
async def until_stopped(bound):
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(bound):
            await stop.wait()
"""

# argv = ADDR NAME TYPE BOUND_S: register NAME, stay until SIGTERM (or BOUND_S), goodbye.
REGISTRAR = (
    ZC_COMMON
    + r"""
async def main(addr, name, kind, bound):
    info = AsyncServiceInfo(kind, f"{name}.{kind}", port=9, properties={"bench": "discovery"},
                            server=f"{name}.local.", parsed_addresses=[addr])
    aiozc = AsyncZeroconf(interfaces=[addr], ip_version=IPVersion.V4Only)
    try:
        emit("registering")
        announcing = await aiozc.async_register_service(info)
        emit("registered")
        await announcing
        emit("announced")
        await until_stopped(bound)
        await (await aiozc.async_unregister_service(info))
    finally:
        await aiozc.async_close()
    emit("closed")
asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])))
"""
)

# argv = ADDR TYPE BOUND_S: browse until SIGTERM (or BOUND_S); "seen" once resolved.
WATCHER = (
    ZC_COMMON
    + r"""
async def main(addr, kind, bound):
    aiozc = AsyncZeroconf(interfaces=[addr], ip_version=IPVersion.V4Only)
    tasks = set()
    async def resolve(name):
        info = AsyncServiceInfo(kind, name)
        ok = await info.async_request(aiozc.zeroconf, 3000)
        emit("seen" if ok else "unresolved", name=name.lower())
    def on_change(zeroconf, service_type, name, state_change):
        if state_change is ServiceStateChange.Added:
            task = asyncio.ensure_future(resolve(name))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        elif state_change is ServiceStateChange.Removed:
            emit("removed", name=name.lower())
    browser = AsyncServiceBrowser(aiozc.zeroconf, kind, handlers=[on_change])
    emit("ready")
    await until_stopped(bound)
    await browser.async_cancel()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await aiozc.async_close()
    emit("closed")
asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3])))
"""
)

# argv = ADDR TYPE NAME BOUND_S: a fresh browser; "resolved" with its start times.
BROWSER = (
    ZC_COMMON
    + r"""
async def main(addr, kind, wanted, bound):
    aiozc = AsyncZeroconf(interfaces=[addr], ip_version=IPVersion.V4Only)
    added = asyncio.get_running_loop().create_future()
    def on_change(zeroconf, service_type, name, state_change):
        if (state_change is ServiceStateChange.Added and name.lower() == wanted
                and not added.done()):
            added.set_result(name)
    browser = AsyncServiceBrowser(aiozc.zeroconf, kind, handlers=[on_change])
    try:
        async with asyncio.timeout(bound):
            info = AsyncServiceInfo(kind, await added)
            ok = await info.async_request(aiozc.zeroconf, bound * 1000)
        end = time.time()
    finally:
        await browser.async_cancel()
        await aiozc.async_close()
    if not ok:
        sys.exit("service not resolved")
    emit("resolved", python=T, start=START, end=end, addresses=info.parsed_addresses())
asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])))
"""
)
