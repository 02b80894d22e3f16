"""Per-second call statistics from each leg's counters and RTCP reports."""

from __future__ import annotations

from meshdesk.calls.model import Call, PartState
from meshdesk.calls.peer import LegStats
from meshdesk.calls.policy import Sample

__all__ = ["update_stats"]


def update_stats(call: Call, readings: dict[str, LegStats], dt: float) -> dict[str, Sample]:
    """Fold one tick of leg readings into ``call.stats``; each leg's quality sample.

    ``readings`` maps a participant's node id to its leg's counters now; ``dt`` is
    the seconds since the previous tick. Totals are summed over legs; the RTT is
    the worst leg's.
    """
    samples: dict[str, Sample] = {}
    d_bytes = d_vs = d_vr = d_packets = d_lost = 0
    rtts: list[float] = []
    for node_id, reading in readings.items():
        part = call.participants[node_id]
        vs0, vr0, b0, p0, l0, _ = part.last
        now_bytes = reading.bytes_sent + reading.bytes_received
        packets = reading.packets_received - p0
        lost = reading.packets_lost - l0
        part.last = (
            reading.video_frames_sent,
            reading.video_frames_received,
            now_bytes,
            reading.packets_received,
            reading.packets_lost,
            reading.audio_frames_received,
        )
        d_vs += reading.video_frames_sent - vs0
        d_vr += reading.video_frames_received - vr0
        d_bytes += max(now_bytes - b0, 0)
        d_packets += max(packets, 0)
        d_lost += max(lost, 0)
        if reading.rtt_ms is not None:
            rtts.append(reading.rtt_ms)
        expected = max(packets, 0) + max(lost, 0)
        loss = 100.0 * max(lost, 0) / expected if expected else 0.0
        if part.state is PartState.CONNECTED:
            samples[node_id] = Sample(loss_pct=loss, rtt_ms=reading.rtt_ms)
    # Totals count every leg the call had, closed ones included (their last reading).
    parts = call.participants.values()
    span = dt if dt > 0 else 1.0
    expected_all = d_packets + d_lost
    call.stats.update(
        {
            "rtt_ms": round(max(rtts), 1) if rtts else None,
            "loss_pct": round(100.0 * d_lost / expected_all, 1) if expected_all else 0.0,
            "bitrate_kbps": round(d_bytes * 8 / 1000 / span, 1),
            "fps_sent": round(d_vs / span, 1),
            "fps_received": round(d_vr / span, 1),
            "video_frames_sent": sum(p.last[0] for p in parts),
            "video_frames_received": sum(p.last[1] for p in parts),
            "audio_frames_received": sum(p.last[5] for p in parts),
        }
    )
    return samples
