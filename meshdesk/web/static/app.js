// The citizen's phone page: lobby, then a WebRTC call with the desk node.
// Served by the node itself; signalling is plain HTTPS requests (the offer is sent
// once ICE gathering is complete; events come by long-polling). No STUN/TURN.
"use strict";
(function () {
  const texts = JSON.parse(document.getElementById("texts").textContent);
  const token = location.pathname.split("/")[2] || "";
  const base = "/j/" + encodeURIComponent(token);
  const $ = (id) => document.getElementById(id);
  let lang = document.body.dataset.lang === "en" ? "en" : "ja";
  try {
    const saved = localStorage.getItem("meshdesk-lang");
    if (saved === "ja" || saved === "en") lang = saved;
  } catch (e) { /* storage may be off: keep the server's choice */ }

  // Spare receive-only sections for what the desk forwards (other participants).
  const FORWARDED_AUDIO = 6;
  const state = {
    stream: null, pc: null, seq: 0, ended: false, admitted: false, facing: "user",
    audioOnly: false, noCamera: false, muted: false, cameraOff: false, connectTries: 0,
    times: { admitted: null, firstFrame: null }, videoSender: null,
  };
  window.meshdesk = state;  // read by the lab tests and the benchmark

  function t(key) { return (texts[lang] || texts.ja)[key] || key; }
  function applyLang() {
    document.documentElement.lang = lang;
    document.querySelectorAll("[data-t]").forEach((el) => { el.textContent = t(el.dataset.t); });
    const status = $("status");
    if (status.dataset.t) status.textContent = t(status.dataset.t);
  }
  function setText(el, key) { el.dataset.t = key; el.textContent = t(key); }
  function show(id) {
    document.querySelectorAll(".screen").forEach((s) => { s.hidden = s.id !== id; });
  }
  function status(key) { if (key) setText($("status"), key); else { $("status").dataset.t = ""; $("status").textContent = ""; } }
  function notice(key, retry) {
    setText($("notice-text"), key);
    $("notice-text").dataset.key = key;
    $("retry").hidden = !retry;
    show("notice");
  }
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  // A request to a desk that vanished (a power cut) may never be answered: give up.
  async function post(path, body, timeoutMs) {
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), timeoutMs || 15000);
    let response;
    try {
      response = await fetch(base + path, {
        method: "POST", cache: "no-store", credentials: "same-origin", signal: abort.signal,
        headers: { "Content-Type": "application/json" }, body: JSON.stringify(body || {}),
      });
    } finally { clearTimeout(timer); }
    let data = {};
    try { data = await response.json(); } catch (e) { data = {}; }
    if (!response.ok) {
      const error = new Error(data.error || String(response.status));
      error.status = response.status; error.key = data.key;
      throw error;
    }
    return data;
  }

  async function openMedia() {
    const video = { facingMode: state.facing, width: { ideal: 640 }, height: { ideal: 480 } };
    try {
      return await navigator.mediaDevices.getUserMedia({ audio: true, video });
    } catch (error) {
      if (error.name === "NotAllowedError" || error.name === "SecurityError") throw error;
    }
    try {  // no camera (or it is busy): voice only
      const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
      state.noCamera = true;
      return stream;
    } catch (error) {
      if (error.name === "NotAllowedError" || error.name === "SecurityError") throw error;
      const none = new Error("no media"); none.name = "NoMedia"; throw none;
    }
  }

  async function start() {
    $("asking").hidden = false;
    try {
      state.stream = await openMedia();
    } catch (error) {
      $("asking").hidden = true;
      notice(error.name === "NoMedia" ? "no_media" : "denied", error.name !== "NoMedia");
      return;
    }
    $("asking").hidden = true;
    $("self-preview").srcObject = state.stream;
    try {
      const data = await post("/lobby");
      $("code").textContent = data.code;
      show("lobby");
    } catch (error) {
      notice(error.key || "error", false);
      return;
    }
    poll();
  }

  async function poll() {
    let backoff = 500;
    while (!state.ended) {
      try {
        const response = await fetch(base + "/events?after=" + state.seq, {
          cache: "no-store", credentials: "same-origin",
        });
        if (!response.ok) {
          let data = {};
          try { data = await response.json(); } catch (e) { data = {}; }
          if (response.status === 429) { await sleep(2000); continue; }
          finish(data.key || "error");
          return;
        }
        const data = await response.json();
        backoff = 500;
        for (const event of data.events) {
          state.seq = Math.max(state.seq, event.seq);
          handle(event);
        }
      } catch (error) {
        if (state.admitted) { status("lost"); checkDesk(); }
        await sleep(backoff);
        backoff = Math.min(backoff * 2, 5000);
      }
    }
  }

  function handle(event) {
    switch (event.kind) {
      case "admitted":
        if (!state.admitted) {
          state.admitted = true;
          state.times.admitted = performance.now();
          connect();
        }
        break;
      case "degraded": audioOnly(); break;
      // Where to reconnect if this desk goes: another staff member's laptop keeps an
      // invitation ready. "moved": this desk left and the call goes on there.
      case "standby": state.standby = event.url; break;
      case "moved": go(event.url); break;
      case "declined": finish("declined"); break;
      case "expired": finish("expired"); break;
      case "ended": finish("ended"); break;
      default: break;
    }
  }

  function preferVp8(transceiver) {
    if (!transceiver.setCodecPreferences || !window.RTCRtpReceiver || !RTCRtpReceiver.getCapabilities) return;
    const caps = RTCRtpReceiver.getCapabilities("video");
    if (!caps) return;
    const vp8 = caps.codecs.filter((c) => /vp8/i.test(c.mimeType));
    const rest = caps.codecs.filter((c) => !/vp8/i.test(c.mimeType));
    try { transceiver.setCodecPreferences(vp8.concat(rest)); } catch (e) { /* keep the default */ }
  }

  function gathered(pc) {
    if (pc.iceGatheringState === "complete") return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => { if (pc.iceGatheringState === "complete") resolve(); };
      pc.addEventListener("icegatheringstatechange", done);
      setTimeout(resolve, 3000);  // host candidates come at once; never wait forever
    });
  }

  function onTrack(event) {
    const track = event.track;
    if (track.kind === "audio") {
      const audio = document.createElement("audio");
      audio.autoplay = true;
      audio.srcObject = new MediaStream([track]);
      $("audios").appendChild(audio);
      return;
    }
    const main = $("remote");
    const target = !main.srcObject ? main : $("forwarded");
    target.srcObject = new MediaStream([track]);
    if (target === $("forwarded")) {
      track.addEventListener("unmute", () => { target.hidden = false; });
      track.addEventListener("mute", () => { target.hidden = true; });
    } else if (target.requestVideoFrameCallback) {
      target.requestVideoFrameCallback(() => { if (state.times.firstFrame === null) state.times.firstFrame = performance.now(); });
    } else {
      target.addEventListener("loadeddata", () => { if (state.times.firstFrame === null) state.times.firstFrame = performance.now(); }, { once: true });
    }
  }

  async function connect() {
    if (state.ended) return;
    show("call");
    status("connecting");
    $("self").srcObject = state.stream;
    const pc = new RTCPeerConnection({ iceServers: [] });
    state.pc = pc;
    $("remote").srcObject = null;
    $("forwarded").srcObject = null;
    $("audios").replaceChildren();
    const audio = state.stream.getAudioTracks()[0];
    const video = state.stream.getVideoTracks()[0];
    if (audio) pc.addTrack(audio, state.stream); else pc.addTransceiver("audio", { direction: "recvonly" });
    if (video && !state.audioOnly) {
      state.videoSender = pc.addTrack(video, state.stream);
    } else {
      state.videoSender = null;
      pc.addTransceiver("video", { direction: "recvonly" });
    }
    for (let i = 0; i < FORWARDED_AUDIO; i++) pc.addTransceiver("audio", { direction: "recvonly" });
    pc.addTransceiver("video", { direction: "recvonly" });
    pc.getTransceivers().forEach((tr) => { if (tr.receiver.track.kind === "video") preferVp8(tr); });
    pc.addEventListener("track", onTrack);
    pc.addEventListener("connectionstatechange", () => {
      if (state.pc !== pc || state.ended) return;
      if (pc.connectionState === "connected") {
        state.connectTries = 0;
        status(state.audioOnly ? "audio_only" : (state.noCamera ? "no_camera" : "in_call"));
      } else if (pc.connectionState === "failed" || pc.connectionState === "closed") {
        checkDesk();
        reconnect();
      } else if (pc.connectionState === "disconnected") {
        status("lost");
        checkDesk();
        setTimeout(() => { if (state.pc === pc && pc.connectionState === "disconnected") reconnect(); }, 4000);
      }
    });
    try {
      await pc.setLocalDescription(await pc.createOffer());
      await gathered(pc);
      const answer = await post("/offer", { sdp: pc.localDescription.sdp });
      if (state.pc !== pc) return;
      await pc.setRemoteDescription({ type: "answer", sdp: answer.sdp });
      await capSending(pc, answer.caps || {});
    } catch (error) {
      if (error.status === 410 || error.status === 404 || error.status === 403) { finish(error.key || "ended"); return; }
      reconnect();
    }
  }

  // The same bit-rate caps as calls between nodes (speech Opus, capped VP8).
  async function capSending(pc, caps) {
    for (const sender of pc.getSenders()) {
      const kind = sender.track && sender.track.kind;
      if (!kind || !caps[kind]) continue;
      const params = sender.getParameters();
      if (!params.encodings || !params.encodings.length) params.encodings = [{}];
      params.encodings[0].maxBitrate = caps[kind];
      try { await sender.setParameters(params); } catch (e) { /* keep the browser's own */ }
    }
  }

  async function reconnect() {
    if (state.ended) return;
    const old = state.pc;
    state.pc = null;
    if (old) old.close();
    status("lost");
    state.connectTries += 1;
    await sleep(Math.min(1000 * state.connectTries, 5000));
    if (!state.ended && state.pc === null) connect();
  }

  // Is the desk still there? If not and a successor keeps our invitation ready, say
  // so and offer to reconnect there (the citizen taps once).
  let checking = false;
  async function checkDesk() {
    if (checking || !state.standby || state.ended) return;
    checking = true;
    try {
      await post("/mute", { audio: state.muted, video: state.cameraOff || state.noCamera }, 3000);
    } catch (error) {
      if (!error.status) lostDesk();
    } finally { checking = false; }
  }

  function lostDesk() {
    if (state.ended) return;
    state.ended = true;
    if (state.pc) state.pc.close();
    state.pc = null;
    setText($("notice-text"), "lost_desk");
    $("notice-text").dataset.key = "lost_desk";
    $("retry").hidden = true;
    $("reconnect").hidden = false;
    show("notice");
  }

  function go(url) {
    state.ended = true;
    if (state.pc) state.pc.close();
    state.pc = null;
    if (state.stream) state.stream.getTracks().forEach((track) => track.stop());
    location.replace(url + "#resume");
  }

  function audioOnly() {
    if (state.audioOnly) return;
    state.audioOnly = true;
    if (state.videoSender) state.videoSender.replaceTrack(null);
    status("audio_only");
  }

  function finish(key) {
    if (state.ended) return;
    state.ended = true;
    if (state.pc) state.pc.close();
    state.pc = null;
    if (state.stream) state.stream.getTracks().forEach((track) => track.stop());
    notice(key, false);
  }

  function tellMute() {
    post("/mute", { audio: state.muted, video: state.cameraOff || state.noCamera }).catch(() => {});
  }

  $("mute").addEventListener("click", () => {
    state.muted = !state.muted;
    state.stream.getAudioTracks().forEach((track) => { track.enabled = !state.muted; });
    setText($("mute"), state.muted ? "unmute" : "mute");
    tellMute();
  });
  $("camera").addEventListener("click", () => {
    state.cameraOff = !state.cameraOff;
    state.stream.getVideoTracks().forEach((track) => { track.enabled = !state.cameraOff; });
    setText($("camera"), state.cameraOff ? "camera_on" : "camera_off");
    tellMute();
  });
  $("flip").addEventListener("click", async () => {
    if (state.noCamera) return;
    const facing = state.facing === "user" ? "environment" : "user";
    try {
      const fresh = await navigator.mediaDevices.getUserMedia({ video: { facingMode: facing } });
      const track = fresh.getVideoTracks()[0];
      const old = state.stream.getVideoTracks()[0];
      if (old) { state.stream.removeTrack(old); old.stop(); }
      state.stream.addTrack(track);
      track.enabled = !state.cameraOff;
      state.facing = facing;
      if (state.videoSender && !state.audioOnly) await state.videoSender.replaceTrack(track);
      $("self").srcObject = state.stream;
    } catch (e) { /* one camera only: stay with it */ }
  });
  $("hangup").addEventListener("click", () => {
    post("/leave").catch(() => {});
    finish("ended");
  });
  $("go").addEventListener("click", start);
  $("retry").addEventListener("click", () => { show("start"); start(); });
  $("reconnect").addEventListener("click", () => { if (state.standby) go(state.standby); });
  $("lang").addEventListener("click", () => {
    lang = lang === "ja" ? "en" : "ja";
    try { localStorage.setItem("meshdesk-lang", lang); } catch (e) { /* fine */ }
    applyLang();
  });

  applyLang();
  if (!window.isSecureContext || !navigator.mediaDevices || !window.RTCPeerConnection) {
    notice("insecure", false);
  } else if (location.hash === "#resume") {
    // Moved here from a desk that left: the citizen was admitted there already.
    history.replaceState(null, "", location.pathname);
    start();
  } else {
    show("start");
  }
})();
