"""An agent's live answers over StreamEvents equal ``spikefleet run`` on frames tonic made.

Generated streams from sensors up to 1280x720 with crop and downsample, windows
by time and by count, live (no samples) and per sample, through a real agent
process: frame for frame, class for class, decision for decision.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from support.agent_process import AgentProcess
from support.events import recording, to_nhwc, tonic_frames
from support.programs import program_for

from spikefleet.cli.main import main
from spikefleet.client.agent import AgentClient
from spikefleet.engine import Engine
from spikefleet.events import Decision, InputSpec, Polarity, WindowStart
from spikefleet.events.decision import class_scores, decide
from spikefleet.events.spec import center_crop
from spikefleet.program.files import save_program


@dataclass
class Case:
    name: str
    spec: InputSpec
    events: int
    duration_us: int
    live: bool  # no sample id: windows from the spec, no sample end


def cases() -> list[Case]:
    hd = (1280, 720, 2)
    davis = (346, 260, 2)
    return [
        Case(
            "1280x720 crop+downsample, 10 ms absolute windows, live",
            InputSpec(
                sensor_size=hd,
                time_window=10_000,
                window_start=WindowStart.ABSOLUTE,
                crop=center_crop(hd, (1200, 704)),
                downsample=(8, 8),
                clip_bits=4,
                decision=Decision.ROLLING_SUM,
                rolling_frames=3,
            ),
            events=300_000,
            duration_us=123_456,
            live=True,
        ),
        Case(
            "1280x720 downsample, by event count with overlap, live",
            InputSpec(
                sensor_size=hd,
                event_count=20_000,
                overlap=5_000,
                downsample=(10, 9),
                clip_bits=4,
                decision=Decision.PER_FRAME,
            ),
            events=150_000,
            duration_us=50_000,
            live=True,
        ),
        Case(
            "346x260 centre crop, merged polarity, 7 ms windows from 0, per sample",
            InputSpec(
                sensor_size=davis,
                time_window=7_000,
                start_time=0,
                include_incomplete=True,
                crop=center_crop(davis, (240, 180)),
                downsample=(3, 3),
                polarity=Polarity.MERGED,
                clip_bits=4,
            ),
            events=40_000,
            duration_us=80_000,
            live=False,
        ),
        Case(
            "346x260 denoise + refractory, 1000-event windows, per sample",
            InputSpec(
                sensor_size=davis,
                event_count=1_000,
                include_incomplete=True,
                downsample=(4, 4),
                clip_bits=2,
                denoise_filter_time=2_000,
                refractory_delta=500,
            ),
            events=60_000,
            duration_us=90_000,
            live=False,
        ),
    ]


@pytest.mark.slow
@pytest.mark.parametrize("case", cases(), ids=lambda c: c.name)
def test_live_answers_equal_spikefleet_run_on_tonic_frames(
    case: Case, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = case.spec
    program = program_for(spec, seed=3)
    rng = np.random.default_rng(17)
    start = 7_000_123 if case.live else 0  # a live stream's clock
    events = recording(rng, spec.sensor_size[:2], case.events, case.duration_us, start_us=start)
    packets = np.array_split(events, 23)

    with AgentProcess(program, tmp_path / "agent") as agent, AgentClient(agent.address) as client:
        replies = list(client.stream_events(packets, sample_id="" if case.live else "rec-1"))
    live_classes = np.concatenate([r.classes for r in replies])
    live_decisions = np.concatenate([r.decisions for r in replies])
    assert replies[-1].sample is not None and replies[-1].decision == spec.decision.value

    # offline: tonic's own frames, run by the engine
    origin = None
    if spec.window_start is WindowStart.ABSOLUTE:
        stride = spec.amount - int(spec.overlap)
        origin = int(events["t"][0]) // stride * stride
    frames = to_nhwc(tonic_frames(spec, events, start_time=origin))
    engine = Engine(program)
    outputs = engine.run(frames).outputs
    decisions, predicted = decide(class_scores(outputs, program.output_scales), spec)
    assert len(live_classes) == len(frames) > 3
    np.testing.assert_array_equal(live_classes, engine.predict(frames))
    np.testing.assert_array_equal(live_decisions, decisions)
    assert replies[-1].sample.predicted_class == predicted
    assert len(set(live_classes.tolist())) > 1  # answers depend on the events

    # and `spikefleet run --events` says the same
    save_program(tmp_path / "p.sfp", program)
    np.save(tmp_path / "events.npy", events)
    args = ["run", str(tmp_path / "p.sfp"), "--events", str(tmp_path / "events.npy")]
    args += ["-o", str(tmp_path / "out.npy"), "--json"] + (["--live"] if case.live else [])
    capsys.readouterr()
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["frame_classes"] == live_classes.tolist()
    assert report["decisions"] == live_decisions.tolist()
    assert report["classes"] == [replies[-1].sample.predicted_class]


def test_run_events_reports_frame_classes_and_the_decision(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = InputSpec(sensor_size=(64, 48, 2), time_window=5_000, downsample=2, clip_bits=4)
    program = program_for(spec, seed=1)
    events = recording(np.random.default_rng(2), (64, 48), 5_000, 60_000)
    save_program(tmp_path / "p.sfp", program)
    np.save(tmp_path / "events.npy", events)
    out = tmp_path / "out.npy"
    assert (
        main(
            [
                "run",
                str(tmp_path / "p.sfp"),
                "--events",
                str(tmp_path / "events.npy"),
                "-o",
                str(out),
                "--json",
            ]
        )
        == 0
    )
    report = json.loads(capsys.readouterr().out)
    frames = to_nhwc(tonic_frames(spec, events))
    engine = Engine(program)
    decisions, predicted = decide(
        class_scores(engine.run(frames).outputs, program.output_scales), spec
    )
    assert report["frame_classes"] == engine.predict(frames).tolist()
    assert report["decisions"] == decisions.tolist() and report["classes"] == [predicted]
    np.testing.assert_array_equal(np.load(out), engine.run(frames).outputs)
