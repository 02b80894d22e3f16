"""The baseline of ``meshdesk bench web``: a minimal aiohttp + aiortc page, nothing else.

Run in a lab host (``python -m meshdesk.bench._web_raw PORT CERT KEY``): it serves one
HTTPS page whose script asks for the camera and microphone, offers once ICE
gathering is complete and POSTs the offer; the server answers with an aiortc peer
connection sending the same synthetic 640×480@30 video and tone a meshdesk desk
sends (aiortc's own encoders, no meshdesk code on the media path). No invitation,
no lobby, no relay. The page records when it started connecting and when the
first remote video frame arrived, like the real page.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import sys

from aiohttp import web
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from meshdesk.calls.media import TestPatternTrack, ToneTrack

_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>raw</title></head>
<body><button id="go">go</button><video id="remote" playsinline autoplay muted></video>
<script>
window.meshdesk = {pc: null, times: {admitted: null, firstFrame: null}};
document.getElementById("go").onclick = async () => {
  const stream = await navigator.mediaDevices.getUserMedia({audio: true, video: true});
  window.meshdesk.times.admitted = performance.now();
  const pc = new RTCPeerConnection({iceServers: []});
  window.meshdesk.pc = pc;
  stream.getTracks().forEach((t) => pc.addTrack(t, stream));
  pc.ontrack = (e) => {
    if (e.track.kind !== "video") return;
    const v = document.getElementById("remote");
    v.srcObject = new MediaStream([e.track]);
    v.requestVideoFrameCallback(() => { window.meshdesk.times.firstFrame = performance.now(); });
  };
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise((r) => { if (pc.iceGatheringState === "complete") r();
    pc.onicegatheringstatechange = () => { if (pc.iceGatheringState === "complete") r(); }; });
  const body = JSON.stringify({sdp: pc.localDescription.sdp});
  const res = await fetch("/offer", {method: "POST", body: body});
  await pc.setRemoteDescription({type: "answer", sdp: (await res.json()).sdp});
};
</script></body></html>"""


async def main(port: int, cert: str, key: str) -> None:
    pcs: set[RTCPeerConnection] = set()

    async def page(request: web.Request) -> web.Response:
        return web.Response(text=_PAGE, content_type="text/html")

    async def offer(request: web.Request) -> web.Response:
        data = json.loads(await request.text())
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        pcs.add(pc)
        await pc.setRemoteDescription(RTCSessionDescription(data["sdp"], "offer"))
        pc.addTrack(ToneTrack())
        pc.addTrack(TestPatternTrack("raw"))
        await pc.setLocalDescription(await pc.createAnswer())
        return web.json_response({"sdp": pc.localDescription.sdp})

    async def close(request: web.Request) -> web.Response:
        for pc in list(pcs):
            await pc.close()
        pcs.clear()
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_get("/", page)
    app.router.add_post("/offer", offer)
    app.router.add_post("/close", close)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "0.0.0.0", port, ssl_context=context).start()
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2], sys.argv[3]))
