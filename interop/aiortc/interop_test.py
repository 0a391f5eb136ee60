#!/usr/bin/env python3
"""Interoperability test: aiortc (through pymediasoup) against a real `sluice serve`.

    python interop_test.py --sluice /path/to/sluice [--server-log debug] [--verbose]

Starts the server itself on loopback, then three peers in one room, each an aiortc
RTCPeerConnection per transport driven by pymediasoup (a Python port of mediasoup-client),
speaking protoo over a WebSocket exactly like the browser demo (web/src/app.js):

- alice produces a synthetic VP8 video (the brightness changes every frame) and a 440 Hz opus tone,
  and consumes bob's;
- bob produces the same kind of media (his own colour, a 660 Hz tone) and consumes alice's: the
  reverse direction;
- carol joins late, once media flows, and only consumes: a second consumer of every producer,
  which can only decode video if sluice asks aiortc for a key frame (aiortc sends one on its first
  frame and then only when asked).

aiortc numbers payload types and header extensions its own way (opus 96, VP8 97 / rtx 98, mid
extension id 1), unlike Chromium and unlike the router. The checks print as TAP lines
(`ok N - ...` / `not ok N - ...`), then `1..N` and a `N passed, N failed` line; the exit status
is 0 only when every check passed. A global timeout bounds the whole run, and the server is
always stopped.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import collections
import fractions
import json
import logging
import math
import os
import random
import signal
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Optional

# --------------------------------------------------------------------------------------------
# Loopback-only ICE.
#
# aioice (aiortc's ICE agent) gathers host candidates on every interface EXCEPT loopback
# (aioice.ice.get_host_addresses skips 127.0.0.1 and ::1), and aiortc falls back to Google's
# public STUN server when no ICE servers are configured. Neither has an option. The server here
# announces 127.0.0.1, so the test gathers on 127.0.0.1 only and uses no STUN server: all traffic
# stays on loopback, and it also works on a machine that has no other interface. Both patches
# must be in place before the first RTCPeerConnection gathers.
import aioice.ice  # noqa: E402
from aiortc.rtcicetransport import RTCIceGatherer  # noqa: E402


def _loopback_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    return ["127.0.0.1"] if use_ipv4 else []


aioice.ice.get_host_addresses = _loopback_host_addresses
RTCIceGatherer.getDefaultIceServers = staticmethod(lambda: [])  # type: ignore[method-assign]

import aiohttp  # noqa: E402
import av  # noqa: E402
from aiortc import AudioStreamTrack, VideoStreamTrack  # noqa: E402
from aiortc.mediastreams import MediaStreamError  # noqa: E402
from pymediasoup import AiortcHandler, Device  # noqa: E402
from pymediasoup.models.transport import DtlsParameters, IceCandidate, IceParameters  # noqa: E402
from pymediasoup.rtp_parameters import RtpCapabilities, RtpParameters  # noqa: E402
from pymediasoup.sctp_parameters import SctpParameters, SctpStreamParameters  # noqa: E402

RUN_TIMEOUT = 90.0  # the whole run, server start to the end of the checks (--timeout)
SERVER_START_TIMEOUT = 20.0
REQUEST_TIMEOUT = 15.0
FIRST_MEDIA_TIMEOUT = 20.0
WINDOW = 3.0  # seconds of media counted per consumer
MIN_VIDEO_FRAMES = 20  # decoded video frames in WINDOW (the source sends 30 fps)
MIN_AUDIO_FRAMES = 75  # audio frames in WINDOW (20 ms frames: 150 expected)

WIDTH, HEIGHT = 320, 240

log = logging.getLogger("interop")


# --------------------------------------------------------------------------------------------
# TAP output


class Tap:
    def __init__(self) -> None:
        self.n = 0
        self.failed = 0
        self.started = time.monotonic()

    def ok(self, cond: bool, name: str, detail: str = "") -> bool:
        self.n += 1
        if not cond:
            self.failed += 1
        text = f"{'ok' if cond else 'not ok'} {self.n} - {name}"
        if detail:
            text += f": {detail}"
        print(text, flush=True)
        return cond

    def diag(self, text: str) -> None:
        for line in str(text).splitlines() or [""]:
            print(f"# {line}", flush=True)

    def finish(self) -> int:
        print(f"1..{self.n}", flush=True)
        elapsed = time.monotonic() - self.started
        print(f"# {elapsed:.1f} s", flush=True)
        print(f"{self.n - self.failed} passed, {self.failed} failed", flush=True)
        return 0 if self.failed == 0 and self.n > 0 else 1


class Fatal(Exception):
    """A failure after which the remaining checks cannot run."""


# --------------------------------------------------------------------------------------------
# The server


class Server:
    def __init__(self, binary: str, log_filter: Optional[str]) -> None:
        self.binary = binary
        self.log_filter = log_filter
        self.proc: Optional[asyncio.subprocess.Process] = None
        self.url: Optional[str] = None
        self.tail: collections.deque[str] = collections.deque(maxlen=300)
        self.log_file = tempfile.NamedTemporaryFile(
            "w", prefix="sluice-aiortc-", suffix=".log", delete=False
        )
        self._readers: list[asyncio.Task] = []
        self._listening: asyncio.Future = asyncio.get_running_loop().create_future()

    async def start(self) -> str:
        args = [
            self.binary, "serve",
            "--listen", "127.0.0.1:0",
            "--rtc-ip", "127.0.0.1",
            "--rtc-port", "0",
            "--workers", "1",
        ]
        if self.log_filter:
            args += ["--log", self.log_filter]
        # Dev mode: no SLUICE_* variable from the caller's environment may change the setup.
        env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
        self.proc = await asyncio.create_subprocess_exec(
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            start_new_session=True,
        )
        _SERVER_PIDS.add(self.proc.pid)
        self._readers = [
            asyncio.create_task(self._read(self.proc.stdout, "out")),
            asyncio.create_task(self._read(self.proc.stderr, "err")),
        ]
        waiter = asyncio.ensure_future(self.proc.wait())
        done, _ = await asyncio.wait(
            {self._listening, waiter}, timeout=SERVER_START_TIMEOUT,
            return_when=asyncio.FIRST_COMPLETED,
        )
        if self._listening in done:
            waiter.cancel()
            self.url = self._listening.result()
            return self.url
        waiter.cancel()
        if self.proc.returncode is not None:
            raise Fatal(f"the server exited with status {self.proc.returncode} before listening")
        raise Fatal(f"no 'sluice listening on' line within {SERVER_START_TIMEOUT:.0f} s")

    async def _read(self, stream: asyncio.StreamReader, name: str) -> None:
        while True:
            line = await stream.readline()
            if not line:
                return
            text = line.decode("utf-8", "replace").rstrip("\n")
            self.tail.append(text)
            self.log_file.write(text + "\n")
            prefix = "sluice listening on "
            if name == "out" and text.startswith(prefix) and not self._listening.done():
                self._listening.set_result(text[len(prefix):].strip())

    def lines(self, *needles: str) -> list[str]:
        self.log_file.flush()
        with open(self.log_file.name, encoding="utf-8", errors="replace") as f:
            return [line.rstrip("\n") for line in f if any(n in line for n in needles)]

    async def stop(self) -> Optional[int]:
        if self.proc is None:
            return None
        # The server runs in its own process group (start_new_session): signal the group, so
        # nothing it started outlives it.
        if self.proc.returncode is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                await asyncio.wait_for(self.proc.wait(), 8)
            except (asyncio.TimeoutError, ProcessLookupError):
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        await self.proc.wait()
        _SERVER_PIDS.discard(self.proc.pid)
        for task in self._readers:
            try:
                await asyncio.wait_for(task, 2)
            except (asyncio.TimeoutError, asyncio.CancelledError):
                pass
        self.log_file.flush()
        return self.proc.returncode


# Pids of servers still running, for the watchdog and signal handlers (which cannot await).
_SERVER_PIDS: set[int] = set()


def _kill_servers() -> None:
    for pid in list(_SERVER_PIDS):
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


# --------------------------------------------------------------------------------------------
# Synthetic media


class SyntheticVideo(VideoStreamTrack):
    """320x240 yuv420p at 30 fps: Y changes every frame (the frame counter), U marks the peer."""

    def __init__(self, u_value: int) -> None:
        super().__init__()
        self.u_value = u_value
        self.count = 0

    async def recv(self) -> av.VideoFrame:
        pts, time_base = await self.next_timestamp()
        frame = av.VideoFrame(width=WIDTH, height=HEIGHT, format="yuv420p")
        y = 16 + (self.count * 7) % 220
        self.count += 1
        for plane, value in zip(frame.planes, (y, self.u_value, 128)):
            plane.update(bytes([value]) * plane.buffer_size)
        frame.pts = pts
        frame.time_base = time_base
        return frame


class ToneAudio(AudioStreamTrack):
    """A mono 48 kHz sine, 20 ms frames, paced like aiortc's own AudioStreamTrack."""

    RATE = 48000
    SAMPLES = 960

    def __init__(self, hz: int) -> None:
        super().__init__()
        self.hz = hz
        # One second holds a whole number of periods for an integral frequency: loop it.
        table = array.array(
            "h", (int(0.3 * 32767 * math.sin(2 * math.pi * hz * i / self.RATE))
                  for i in range(self.RATE)),
        )
        self.table = table.tobytes()
        self._start: Optional[float] = None
        self._timestamp = 0

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.time()
            self._timestamp = 0
        else:
            self._timestamp += self.SAMPLES
            wait = self._start + self._timestamp / self.RATE - time.time()
            if wait > 0:
                await asyncio.sleep(wait)
        offset = (self._timestamp % self.RATE) * 2
        frame = av.AudioFrame(format="s16", layout="mono", samples=self.SAMPLES)
        frame.planes[0].update(self.table[offset:offset + self.SAMPLES * 2])
        frame.pts = self._timestamp
        frame.sample_rate = self.RATE
        frame.time_base = fractions.Fraction(1, self.RATE)
        return frame


# --------------------------------------------------------------------------------------------
# What a consumer received


@dataclass
class Received:
    consumer_id: str
    producer_id: str
    from_peer: str
    kind: str
    rtp_parameters: dict
    # (monotonic time, measure...) per frame
    frames: list[tuple] = field(default_factory=list)
    ended: Optional[str] = None
    task: Optional[asyncio.Task] = None

    async def pump(self, track) -> None:
        try:
            while True:
                frame = await track.recv()
                now = time.monotonic()
                if self.kind == "video":
                    self.frames.append((now, frame.width, frame.height, *_plane_means(frame)))
                else:
                    self.frames.append((now, *_audio_measures(frame)))
        except MediaStreamError:
            self.ended = "track ended"
        except asyncio.CancelledError:
            raise
        except Exception as e:  # report, do not crash the loop
            self.ended = f"{type(e).__name__}: {e}"

    def in_window(self, start: float, end: float) -> list[tuple]:
        return [f for f in self.frames if start <= f[0] < end]


def _plane_means(frame: av.VideoFrame) -> tuple[float, float]:
    """Mean of the middle row of the Y and of the U plane."""
    out = []
    for index, rows in ((0, frame.height), (1, (frame.height + 1) // 2)):
        plane = frame.planes[index]
        width = plane.width
        data = bytes(plane)
        row = data[plane.line_size * (rows // 2): plane.line_size * (rows // 2) + width]
        out.append(sum(row) / max(1, len(row)))
    return out[0], out[1]


def _audio_measures(frame: av.AudioFrame) -> tuple[int, int, float]:
    """(samples, zero crossings of the first channel, RMS of the first channel)."""
    channels = len(frame.layout.channels)
    if frame.format.name not in ("s16", "s16p"):
        frame = _resample_s16(frame)
    samples = array.array("h", bytes(frame.planes[0]))
    if frame.format.name == "s16" and channels > 1:
        samples = samples[0::channels]
    samples = samples[: frame.samples]
    crossings = sum(1 for a, b in zip(samples, samples[1:]) if (a < 0) != (b < 0))
    rms = math.sqrt(sum(s * s for s in samples) / max(1, len(samples)))
    return len(samples), crossings, rms


def _resample_s16(frame: av.AudioFrame) -> av.AudioFrame:
    resampler = av.AudioResampler(format="s16", layout=frame.layout.name, rate=frame.sample_rate)
    return resampler.resample(frame)[0]


# --------------------------------------------------------------------------------------------
# protoo + pymediasoup peer


class ProtooError(Exception):
    def __init__(self, method: str, code: Any, reason: Any, data: Any) -> None:
        super().__init__(f"{method} refused: {code} {reason}")
        self.method = method
        self.code = code
        self.reason = reason
        self.data = data


class Peer:
    def __init__(self, run: "Run", peer_id: str, *, tracks: list, consume: bool) -> None:
        self.run = run
        self.peer_id = peer_id
        self.tracks = tracks  # [(kind, MediaStreamTrack)]
        self.consume = consume
        self.ws: Optional[aiohttp.ClientWebSocketResponse] = None
        self.reader: Optional[asyncio.Task] = None
        self.pending: dict[int, asyncio.Future] = {}
        self.notifications: list[tuple[str, dict]] = []
        self.errors: list[str] = []
        self.device: Optional[Device] = None
        self.router_caps: dict = {}
        self.send_transport = None
        self.recv_transport = None
        self.states: dict[str, list[str]] = {"send": [], "recv": []}
        self.connected: dict[str, asyncio.Event] = {"send": asyncio.Event(), "recv": asyncio.Event()}
        self.produce_params: dict[str, dict] = {}
        self.connect_params: dict[str, dict] = {}
        self.connect_ok: dict[str, bool] = {"send": False, "recv": False}
        self.producers: dict[str, Any] = {}  # kind -> pymediasoup Producer
        self.received: dict[str, Received] = {}  # consumer id -> Received
        self.data_messages: list[tuple[str, str]] = []
        self.data_consumers: dict[str, Any] = {}
        self._consume_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task] = set()
        self.close_code: Optional[int] = None

    # -- signaling

    async def open(self) -> None:
        token = (await self.run.get_json(
            f"/dev/token?roomId={self.run.room}&peerId={self.peer_id}"))["token"]
        url = (self.run.base.replace("http://", "ws://")
               + f"/ws?roomId={self.run.room}&peerId={self.peer_id}&token={token}")
        self.ws = await self.run.http.ws_connect(url, protocols=("protoo",), autoping=True)
        if self.ws.protocol != "protoo":
            raise Fatal(f"{self.peer_id}: the server chose subprotocol {self.ws.protocol!r}")
        self.reader = asyncio.create_task(self._read())

    async def request(self, method: str, data: Optional[dict] = None) -> Any:
        if self.ws is None or self.ws.closed:
            raise ConnectionError(f"{self.peer_id}: socket closed (code {self.close_code})")
        rid = random.randrange(1, 10_000_000)
        while rid in self.pending:
            rid = random.randrange(1, 10_000_000)
        fut = asyncio.get_running_loop().create_future()
        self.pending[rid] = fut
        payload = data or {}
        log.debug("%s -> %s %s", self.peer_id, method, json.dumps(payload))
        try:
            await self.ws.send_str(json.dumps(
                {"request": True, "id": rid, "method": method, "data": payload}))
            msg = await asyncio.wait_for(fut, REQUEST_TIMEOUT)
        except asyncio.TimeoutError:
            raise TimeoutError(f"{self.peer_id}: no response to {method} in {REQUEST_TIMEOUT:.0f} s")
        finally:
            self.pending.pop(rid, None)
        if msg.get("ok"):
            return msg.get("data", {})
        raise ProtooError(method, msg.get("errorCode"), msg.get("errorReason"), payload)

    async def _read(self) -> None:
        assert self.ws is not None
        try:
            async for m in self.ws:
                if m.type != aiohttp.WSMsgType.TEXT:
                    continue
                try:
                    msg = json.loads(m.data)
                except ValueError:
                    self.errors.append(f"unparsable frame: {m.data[:200]}")
                    continue
                if msg.get("request"):
                    self._spawn(self._serve(msg))
                elif msg.get("response"):
                    fut = self.pending.get(msg.get("id"))
                    if fut is not None and not fut.done():
                        fut.set_result(msg)
                elif msg.get("notification"):
                    self.notifications.append((msg.get("method"), msg.get("data") or {}))
                    log.debug("%s <- notification %s %s", self.peer_id, msg.get("method"),
                              json.dumps(msg.get("data")))
        finally:
            self.close_code = self.ws.close_code
            for fut in self.pending.values():
                if not fut.done():
                    fut.set_exception(ConnectionError(
                        f"{self.peer_id}: socket closed (code {self.close_code})"))

    def _spawn(self, coro) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, msg: dict) -> None:
        method, data = msg.get("method"), msg.get("data") or {}
        log.debug("%s <- request %s %s", self.peer_id, method, json.dumps(data))
        try:
            result = await self._handle_request(method, data)
            reply = {"response": True, "id": msg["id"], "ok": True, "data": result}
        except Exception as e:
            self.errors.append(f"{method} failed: {type(e).__name__}: {e}")
            log.debug("%s", traceback.format_exc())
            reply = {"response": True, "id": msg["id"], "ok": False,
                     "errorCode": 500, "errorReason": str(e)}
        if self.ws is not None and not self.ws.closed:
            await self.ws.send_str(json.dumps(reply))

    async def _handle_request(self, method: str, data: dict) -> dict:
        if method == "newConsumer":
            if self.recv_transport is None:
                raise RuntimeError("not consuming")
            # pymediasoup, unlike mediasoup-client, does not queue its operations: two
            # concurrent consume() calls race on the RTCPeerConnection's descriptions.
            async with self._consume_lock:
                consumer = await self.recv_transport.consume(
                    id=data["id"],
                    producerId=data["producerId"],
                    kind=data["kind"],
                    rtpParameters=RtpParameters.model_validate(data["rtpParameters"]),
                    appData={**(data.get("appData") or {}), "peerId": data.get("peerId")},
                )
            rec = Received(consumer_id=data["id"], producer_id=data["producerId"],
                           from_peer=data.get("peerId"), kind=data["kind"],
                           rtp_parameters=data["rtpParameters"])
            self.received[rec.consumer_id] = rec
            rec.task = asyncio.create_task(rec.pump(consumer.track))
            return {}
        if method == "newDataConsumer":
            if self.recv_transport is None:
                raise RuntimeError("not consuming")
            async with self._consume_lock:
                dc = await self.recv_transport.consumeData(
                    id=data["id"],
                    dataProducerId=data["dataProducerId"],
                    sctpStreamParameters=SctpStreamParameters.model_validate(
                        data["sctpStreamParameters"]),
                    label=data.get("label", ""),
                    protocol=data.get("protocol", ""),
                    appData={**(data.get("appData") or {}), "peerId": data.get("peerId")},
                )
            self.data_consumers[data["id"]] = dc
            label = data.get("label", "")

            @dc.on("message")
            def on_message(message):
                self.data_messages.append((label, message))

            return {}
        raise ProtooError(method, 501, "unknown method", data)

    # -- media

    async def join(self) -> dict:
        self.router_caps = await self.request("getRouterRtpCapabilities")
        self.device = Device(handlerFactory=AiortcHandler.createFactory(
            tracks=[t for _, t in self.tracks]))
        await self.device.load(RtpCapabilities.model_validate(self.router_caps))
        sctp = self.device.sctpCapabilities.model_dump()
        if self.tracks:
            self.send_transport = await self._create_transport("send", sctp)
        if self.consume:
            self.recv_transport = await self._create_transport("recv", sctp)
        join = {
            "displayName": self.peer_id.capitalize(),
            "device": {"flag": "aiortc", "name": "aiortc+pymediasoup", "version": _versions()},
            "sctpCapabilities": sctp,
        }
        if self.consume:
            join["rtpCapabilities"] = self.device.recvRtpCapabilities.model_dump(exclude_none=True)
        return await self.request("join", join)

    async def _create_transport(self, direction: str, sctp: dict):
        info = await self.request("createWebRtcTransport", {
            "forceTcp": False,
            "producing": direction == "send",
            "consuming": direction == "recv",
            "sctpCapabilities": sctp,
        })
        kwargs = dict(
            id=info["id"],
            iceParameters=IceParameters.model_validate(info["iceParameters"]),
            iceCandidates=[IceCandidate.model_validate(c) for c in info["iceCandidates"]],
            dtlsParameters=DtlsParameters.model_validate(info["dtlsParameters"]),
            sctpParameters=(SctpParameters.model_validate(info["sctpParameters"])
                            if info.get("sctpParameters") else None),
            # No STUN server: aiortc would otherwise use Google's (see the patch at the top).
            iceServers=[],
        )
        assert self.device is not None
        transport = (self.device.createSendTransport(**kwargs) if direction == "send"
                     else self.device.createRecvTransport(**kwargs))

        @transport.on("connect")
        async def on_connect(dtlsParameters):
            # pymediasoup does not wait for this (the JS client does): `produce` may be sent
            # before the response. The server handles a peer's requests in order.
            # pymediasoup sends one fingerprint, the last of the SDP's: aiortc lists sha-256,
            # sha-384 and sha-512, so sha-512. The server must accept it as mediasoup does.
            params = dtlsParameters.model_dump(exclude_none=True)
            self.connect_params[direction] = params
            try:
                await self.request("connectWebRtcTransport", {
                    "transportId": transport.id, "dtlsParameters": params,
                })
                self.connect_ok[direction] = True
            except ProtooError as e:
                self.errors.append(f"connectWebRtcTransport ({direction}) refused: {e.code} "
                                   f"{e.reason}; payload: {json.dumps(e.data)}")
            except Exception as e:
                self.errors.append(f"connectWebRtcTransport ({direction}) failed: {e}")

        # pymediasoup's "connectionstatechange" follows ICE only; the RTCPeerConnection's own
        # connectionState also needs DTLS.
        pc = transport.handler.pc

        @pc.on("connectionstatechange")
        def on_state():
            self.states[direction].append(pc.connectionState)
            if pc.connectionState == "connected":
                self.connected[direction].set()

        @transport.on("error")
        def on_error(error):
            self.errors.append(f"{direction} transport error: {error}")

        if direction == "send":
            @transport.on("produce")
            async def on_produce(kind, rtpParameters, appData):
                params = rtpParameters.model_dump(exclude_none=True)
                self.produce_params[kind] = params
                data = await self.request("produce", {
                    "transportId": transport.id, "kind": kind,
                    "rtpParameters": params, "appData": appData,
                })
                return data["id"]

            @transport.on("producedata")
            async def on_producedata(sctpStreamParameters, label, protocol, appData):
                data = await self.request("produceData", {
                    "transportId": transport.id,
                    "sctpStreamParameters": sctpStreamParameters.model_dump(exclude_none=True),
                    "label": label, "protocol": protocol, "appData": appData,
                })
                return data["id"]

        return transport

    async def produce_all(self) -> None:
        assert self.send_transport is not None
        for kind, track in self.tracks:
            try:
                producer = await self.send_transport.produce(
                    track=track, stopTracks=False,
                    appData={"source": "mic" if kind == "audio" else "webcam"})
            except ProtooError as e:
                raise Fatal(f"{self.peer_id}: produce {kind} refused by the server: "
                            f"{e.code} {e.reason}; payload: {json.dumps(e.data)}")
            self.producers[kind] = producer

    async def close(self) -> None:
        for rec in self.received.values():
            if rec.task is not None:
                rec.task.cancel()
        for t in list(self._tasks):
            t.cancel()
        if self.ws is not None and not self.ws.closed:
            try:
                await asyncio.wait_for(self.ws.close(), 3)
            except (asyncio.TimeoutError, Exception):
                pass
        for transport in (self.send_transport, self.recv_transport):
            if transport is not None:
                try:
                    await asyncio.wait_for(transport.close(), 5)
                except (asyncio.TimeoutError, Exception):
                    pass
        for _, track in self.tracks:
            track.stop()


def _versions() -> str:
    from importlib.metadata import version
    return f"aiortc {version('aiortc')}, pymediasoup {version('pymediasoup')}"


# --------------------------------------------------------------------------------------------
# The run


def _codec_pt(params: dict, mime: str) -> Optional[int]:
    for c in params.get("codecs", []):
        if c.get("mimeType", "").lower() == mime.lower():
            return c.get("payloadType", c.get("preferredPayloadType"))
    return None


def _ext_id(params: dict, uri: str) -> Optional[int]:
    for e in params.get("headerExtensions", []):
        if e.get("uri") == uri:
            return e.get("id", e.get("preferredId"))
    return None


MID_URI = "urn:ietf:params:rtp-hdrext:sdes:mid"


def _numbering(params: dict, kind: str) -> dict:
    if kind == "audio":
        return {"opus": _codec_pt(params, "audio/opus"), "mid": _ext_id(params, MID_URI)}
    vp8 = _codec_pt(params, "video/VP8")
    rtx = None
    for c in params.get("codecs", []):
        if c.get("mimeType", "").lower() == "video/rtx" and (c.get("parameters") or {}).get("apt") == vp8:
            rtx = c.get("payloadType", c.get("preferredPayloadType"))
    return {"VP8": vp8, "rtx": rtx, "mid": _ext_id(params, MID_URI)}


def _router_numbering(caps: dict) -> dict:
    out = {}
    for kind in ("audio", "video"):
        codecs = [c for c in caps.get("codecs", []) if c.get("kind") == kind]
        exts = [e for e in caps.get("headerExtensions", []) if e.get("kind") == kind]
        out[kind] = _numbering({"codecs": codecs, "headerExtensions": exts}, kind)
    return out


class Run:
    def __init__(self, args, tap: Tap) -> None:
        self.args = args
        self.tap = tap
        self.room = f"aiortc-{random.randrange(16**6):06x}"
        self.server: Optional[Server] = None
        self.http: Optional[aiohttp.ClientSession] = None
        self.base = ""
        self.peers: list[Peer] = []

    async def get_json(self, path: str, headers: Optional[dict] = None) -> Any:
        assert self.http is not None
        async with self.http.get(self.base + path, headers=headers) as r:
            body = await r.text()
            if r.status != 200:
                raise Fatal(f"GET {path}: HTTP {r.status} {body[:300]}")
            return json.loads(body)

    async def main(self) -> None:
        tap = self.tap
        self.server = Server(self.args.sluice, self.args.server_log)
        self.base = await self.server.start()
        tap.ok(True, "sluice started", self.base)
        tap.diag(f"room {self.room}; server log {self.server.log_file.name} "
                 "(removed when every check passes, unless --server-log is given)")
        self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT))

        alice = Peer(self, "alice", consume=True, tracks=[
            ("audio", ToneAudio(440)), ("video", SyntheticVideo(u_value=64))])
        bob = Peer(self, "bob", consume=True, tracks=[
            ("audio", ToneAudio(660)), ("video", SyntheticVideo(u_value=192))])
        carol = Peer(self, "carol", consume=True, tracks=[])
        self.peers = [alice, bob, carol]
        tone = {"alice": 440, "bob": 660}
        colour = {"alice": 64, "bob": 192}

        # alice joins and produces; then bob (he is offered alice's producers on join).
        for peer in (alice, bob):
            await peer.open()
            try:
                joined = await peer.join()
                await peer.produce_all()
            except ProtooError as e:
                raise Fatal(f"{peer.peer_id}: {e}; payload: {json.dumps(e.data)[:2000]}")
            tap.ok(True, f"{peer.peer_id} joined and produced audio + video",
                   f"peers already there: {[p.get('id') for p in joined.get('peers', [])]}")

        router = _router_numbering(alice.router_caps)
        client = {k: _numbering(alice.produce_params[k], k) for k in ("audio", "video")}
        tap.diag(f"router numbering: {router}")
        tap.diag(f"aiortc numbering (alice's produce): {client}")
        differs = any(client[k][n] != router[k][n] for k in client for n in client[k])
        tap.ok(differs, "aiortc numbers payload types / extension ids unlike the router",
               "the server had to map them" if differs else
               "identical numbering: this run does not exercise the mapping")

        # connectWebRtcTransport is answered, then ICE and DTLS connect, on all four transports.
        await self.check_connected([(p, d) for p in (alice, bob) for d in ("send", "recv")])

        # Media flows between alice and bob; then carol joins late.
        await self.wait_first_frames([alice, bob], expected=2)
        await carol.open()
        try:
            joined = await carol.join()
        except ProtooError as e:
            raise Fatal(f"carol: {e}; payload: {json.dumps(e.data)[:2000]}")
        tap.ok(True, "carol joined late (consumer only)",
               f"peers already there: {[p.get('id') for p in joined.get('peers', [])]}")
        await self.check_connected([(carol, "recv")])
        await self.wait_first_frames([carol], expected=4)

        # Count what every consumer gets in the same window.
        start = time.monotonic()
        await asyncio.sleep(WINDOW)
        end = time.monotonic()
        for consumer_peer in (alice, bob, carol):
            expected = [p for p in (alice, bob) if p is not consumer_peer]
            for source in expected:
                for kind in ("video", "audio"):
                    recs = [r for r in consumer_peer.received.values()
                            if r.from_peer == source.peer_id and r.kind == kind]
                    name = f"{consumer_peer.peer_id} decodes {source.peer_id}'s {kind}"
                    if not recs:
                        tap.ok(False, name, f"no newConsumer received; errors {consumer_peer.errors}")
                        continue
                    rec = recs[0]
                    frames = rec.in_window(start, end)
                    if kind == "video":
                        self.check_video(name, rec, frames, end - start, colour[source.peer_id])
                    else:
                        self.check_audio(name, rec, frames, end - start, tone[source.peer_id])

        consumed = {k: _numbering(v.rtp_parameters, v.kind) for k, v in bob.received.items()}
        tap.diag(f"bob's consumers as offered by newConsumer: {consumed}")

        await self.check_admin(alice, bob, carol)
        await self.check_stats(alice, bob)

        for peer in self.peers:
            tap.ok(not peer.errors, f"{peer.peer_id}: no client-side errors",
                   "; ".join(peer.errors)[:1000])

    async def check_connected(self, transports: list[tuple[Peer, str]]) -> None:
        """Each transport's connectWebRtcTransport is accepted and its RTCPeerConnection
        connects (ICE + DTLS); stops the run if one does not."""
        deadline = time.monotonic() + FIRST_MEDIA_TIMEOUT

        def refused(peer: Peer, direction: str) -> list[str]:
            return [e for e in peer.errors if e.startswith(f"connectWebRtcTransport ({direction})")]

        while time.monotonic() < deadline:
            if all(p.connected[d].is_set() or refused(p, d) for p, d in transports):
                break
            await asyncio.sleep(0.05)
        broken = 0
        for peer, direction in transports:
            name = f"{peer.peer_id}'s {direction} transport: connectWebRtcTransport accepted"
            sent = peer.connect_params.get(direction, {}).get("fingerprints", [])
            detail = ("; ".join(refused(peer, direction))[:2000]
                      or f"fingerprints {[f.get('algorithm') for f in sent]}")
            if not self.tap.ok(peer.connect_ok[direction], name, detail):
                broken += 1
            connected = peer.connected[direction].is_set()
            if not self.tap.ok(connected, f"{peer.peer_id}'s {direction} transport connected "
                               f"(ICE + DTLS)", " -> ".join(peer.states[direction]) or "no state"):
                broken += 1
        if broken:
            raise Fatal(f"{broken} transport check(s) failed: media cannot flow")

    async def wait_first_frames(self, peers: list[Peer], expected: int) -> None:
        """Waits until each peer has `expected` consumers that all got a frame."""
        deadline = time.monotonic() + FIRST_MEDIA_TIMEOUT
        while time.monotonic() < deadline:
            if all(len(p.received) >= expected and all(r.frames for r in p.received.values())
                   for p in peers):
                return
            await asyncio.sleep(0.1)
        for p in peers:
            missing = [f"{r.from_peer}'s {r.kind}" for r in p.received.values() if not r.frames]
            self.tap.diag(f"{p.peer_id}: {len(p.received)}/{expected} consumers, "
                          f"no frame yet from {missing}; errors {p.errors}")

    def check_video(self, name: str, rec: Received, frames: list, seconds: float,
                    colour: int) -> None:
        count = len(frames)
        if not frames:
            self.tap.ok(False, name, f"0 frames in {seconds:.1f} s "
                        f"({len(rec.frames)} in all; {rec.ended or 'track live'})")
            return
        sizes = {(f[1], f[2]) for f in frames}
        brightness = {round(f[3]) for f in frames}
        u = sum(f[4] for f in frames) / count
        detail = (f"{count} frames in {seconds:.1f} s ({count / seconds:.1f} fps), "
                  f"size {sorted(sizes)}, {len(brightness)} distinct brightnesses, U {u:.0f}")
        good = (count >= MIN_VIDEO_FRAMES and sizes == {(WIDTH, HEIGHT)}
                and len(brightness) >= count // 3 and abs(u - colour) < 24)
        self.tap.ok(good, name, detail)

    def check_audio(self, name: str, rec: Received, frames: list, seconds: float,
                    tone: int) -> None:
        count = len(frames)
        if not frames:
            self.tap.ok(False, name, f"0 frames in {seconds:.1f} s "
                        f"({len(rec.frames)} in all; {rec.ended or 'track live'})")
            return
        samples = sum(f[1] for f in frames)
        crossings = sum(f[2] for f in frames)
        rms = math.sqrt(sum(f[3] ** 2 for f in frames) / count)
        # The decoder's rate is 48 kHz: two zero crossings per period.
        hz = crossings / 2 / (samples / 48000) if samples else 0.0
        detail = (f"{count} frames in {seconds:.1f} s, tone ~{hz:.0f} Hz "
                  f"(sent {tone} Hz), RMS {rms:.0f}")
        good = count >= MIN_AUDIO_FRAMES and abs(hz - tone) < 0.1 * tone and rms > 1000
        self.tap.ok(good, name, detail)

    async def check_admin(self, alice: Peer, bob: Peer, carol: Peer) -> None:
        tap = self.tap
        token = (await self.get_json(
            f"/dev/token?roomId={self.room}&peerId=admin&grants=admin"))["token"]
        state = await self.get_json(f"/api/rooms/{self.room}",
                                    headers={"Authorization": f"Bearer {token}"})
        if self.args.verbose:
            tap.diag(f"GET /api/rooms/{self.room}: {json.dumps(state)}")
        peers = state.get("peers", {})
        tap.ok(sorted(peers) == ["alice", "bob", "carol"]
               and all(p.get("joined") for p in peers.values()),
               "admin API lists alice, bob and carol, joined", f"{sorted(peers)}")
        for peer in (alice, bob):
            ps = peers.get(peer.peer_id, {})
            producers = ps.get("producers", {})
            ids = {k: p.id for k, p in peer.producers.items()}
            kinds = {pid: producers.get(pid, {}).get("kind") for pid in ids.values()}
            scores = {p.get("kind"): [s.get("score") for s in p.get("score", [])]
                      for p in producers.values()}
            good = (len(producers) == 2 and all(kinds[ids[k]] == k for k in ids)
                    and all(s and max(s) > 0 for s in scores.values()))
            tap.ok(good, f"admin API: {peer.peer_id}'s audio and video producers receive "
                   f"media in aiortc's numbering", f"producer scores {scores}")
        for peer, n in ((alice, 2), (bob, 2), (carol, 4)):
            ps = peers.get(peer.peer_id, {})
            consumers = ps.get("consumers", {})
            transports = ps.get("transports", {})
            paused = [c for c in consumers.values() if c.get("paused") or c.get("producerPaused")]
            dtls = sorted({t.get("dtlsState") for t in transports.values()}, key=str)
            tap.ok(len(consumers) == n and not paused and dtls == ["connected"],
                   f"admin API: {peer.peer_id} has {n} running consumers, transports connected",
                   f"{len(consumers)} consumers ({len(paused)} paused), DTLS {dtls}")

    async def check_stats(self, alice: Peer, bob: Peer) -> None:
        """The producer's stats as the server counts them (the peer's own getProducerStats)."""
        for peer in (alice, bob):
            for kind, producer in peer.producers.items():
                try:
                    stats = await peer.request("getProducerStats", {"producerId": producer.id})
                except Exception as e:
                    self.tap.ok(False, f"getProducerStats of {peer.peer_id}'s {kind}", str(e))
                    continue
                if self.args.verbose:
                    self.tap.diag(f"{peer.peer_id} {kind} producer stats: {json.dumps(stats)}")
                entries = stats if isinstance(stats, list) else [stats]
                packets = sum(int(s.get("packetCount", 0) or 0) for s in entries
                              if isinstance(s, dict))
                mimes = sorted({s.get("mimeType") for s in entries
                                if isinstance(s, dict) and s.get("mimeType")})
                plis = sum(int(s.get("pliCount", 0) or 0) for s in entries if isinstance(s, dict))
                self.tap.ok(packets > 0, f"getProducerStats of {peer.peer_id}'s {kind}",
                            f"{packets} packets, {mimes}"
                            + (f", {plis} PLIs sent to aiortc" if kind == "video" else ""))

    async def teardown(self) -> None:
        for peer in self.peers:
            try:
                await asyncio.wait_for(peer.close(), 10)
            except (asyncio.TimeoutError, Exception):
                pass
        if self.http is not None:
            await self.http.close()
        if self.server is not None:
            status = await self.server.stop()
            self.tap.diag(f"server stopped, exit status {status}")


async def amain(args) -> int:
    tap = Tap()
    run = Run(args, tap)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, lambda: (_kill_servers(), os._exit(130)))
    failure: Optional[str] = None
    try:
        await asyncio.wait_for(run.main(), args.timeout)
    except asyncio.TimeoutError:
        failure = f"the run did not finish within {args.timeout:.0f} s"
    except Fatal as e:
        failure = str(e)
    except Exception as e:
        failure = f"{type(e).__name__}: {e}\n{traceback.format_exc()}"
    if failure is not None:
        first, _, rest = failure.partition("\n")
        tap.ok(False, "the run completed", first)
        if rest:
            tap.diag(rest)
        for peer in run.peers:
            for error in peer.errors:
                tap.diag(f"{peer.peer_id}: {error[:300]}")
    try:
        await asyncio.wait_for(run.teardown(), 20)
    except (asyncio.TimeoutError, Exception) as e:
        tap.diag(f"teardown: {type(e).__name__}: {e}")
        _kill_servers()
    if run.server is not None:
        problems = run.server.lines(" ERROR ", " WARN ", "panicked")
        problems = [p for p in problems if "dev mode" not in p]
        if problems:
            tap.diag("server warnings/errors:")
            for line in problems[-40:]:
                tap.diag("  " + line)
        if tap.failed:
            tap.diag("server output (tail):")
            for line in list(run.server.tail)[-60:]:
                tap.diag("  " + line)
        elif not args.server_log:
            run.server.log_file.close()
            os.unlink(run.server.log_file.name)
    return tap.finish()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sluice", required=True, help="path to the sluice binary")
    parser.add_argument("--server-log", default=None, metavar="FILTER",
                        help='the server\'s --log filter, e.g. "debug" or "sluice_media=debug,info"')
    parser.add_argument("--timeout", type=float, default=RUN_TIMEOUT, metavar="SECONDS",
                        help=f"bound on the whole run (default {RUN_TIMEOUT:.0f}); teardown "
                             "gets 20 s more, and a watchdog ends the process 30 s after it")
    parser.add_argument("--verbose", action="store_true",
                        help="log signaling, aiortc and pymediasoup (debug) to stderr")
    args = parser.parse_args()
    if not (os.path.isfile(args.sluice) and os.access(args.sluice, os.X_OK)):
        print(f"not ok 1 - sluice binary {args.sluice!r} is not an executable file")
        print("1..1\n0 passed, 1 failed")
        sys.exit(1)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    if not args.verbose:
        # pymediasoup logs its tracebacks itself; the checks say what failed.
        logging.getLogger("pymediasoup").setLevel(logging.CRITICAL)

    # A hard stop in case the event loop itself is stuck (a blocked thread, a hung close).
    def watchdog():
        time.sleep(args.timeout + 30)
        print(f"not ok 999 - watchdog: still running {args.timeout + 30:.0f} s after start",
              flush=True)
        _kill_servers()
        os._exit(3)

    threading.Thread(target=watchdog, daemon=True).start()
    try:
        code = asyncio.run(amain(args))
    finally:
        _kill_servers()
    sys.stdout.flush()
    # aiortc's codec threads can keep the interpreter alive at exit: leave now.
    os._exit(code)


if __name__ == "__main__":
    main()
