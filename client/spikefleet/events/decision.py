"""How per-frame class scores become an answer: an InputSpec's decision rule.

The agent feeds a sample's scores a reply at a time, ``spikefleet run`` all at
once; both get the same answers because scores (float32) are summed in
float64, where sums of a sample's float32 scores are exact, so the order and
grouping of the additions cannot change an argmax.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from spikefleet.events.spec import Decision, InputSpec


def class_scores(outputs: np.ndarray, output_scales: np.ndarray | None) -> npt.NDArray[np.float32]:
    """Per-frame class scores from a program's last-layer outputs, as the agent computes
    them: flattened, float32, times the program's output scales."""
    scores = np.asarray(outputs).reshape(len(outputs), -1).astype(np.float32)
    if output_scales is not None:
        scores = scores * np.asarray(output_scales, dtype=np.float32).reshape(1, -1)
    return scores


class Decider:
    """One sample's (or live stream's) running decision.

    :meth:`add` returns, for each new frame, the rule's answer after that frame:
    ``per_frame`` the frame's own argmax, ``sample_sum`` the argmax of the
    sample's scores summed so far (the last one is the sample's answer),
    ``rolling_sum`` the argmax of the last K frames' summed scores."""

    def __init__(self, spec: InputSpec) -> None:
        self.rule = spec.decision
        self.k = spec.rolling_frames
        self.frames = 0
        self.sums: npt.NDArray[np.float64] | None = None
        self._recent = np.zeros((0, 0), np.float64)  # the last K-1 frames' scores

    @property
    def predicted(self) -> int:
        """The sample's answer under sample_sum (-1 before any frame)."""
        return -1 if self.sums is None or not len(self.sums) else int(self.sums.argmax())

    def add(self, scores: np.ndarray) -> npt.NDArray[np.int64]:
        scores = np.asarray(scores, dtype=np.float64)
        if scores.ndim != 2 or not len(scores):
            return np.zeros(0, np.int64)
        running = np.cumsum(scores, axis=0)
        if self.sums is None:
            self.sums = np.zeros(scores.shape[1], np.float64)
        running += self.sums
        self.sums = running[-1].copy()
        self.frames += len(scores)
        if self.rule is Decision.PER_FRAME:
            return scores.argmax(axis=1).astype(np.int64)
        if self.rule is Decision.SAMPLE_SUM:
            return running.argmax(axis=1).astype(np.int64)
        history = np.concatenate([self._recent.reshape(-1, scores.shape[1]), scores])
        sums = np.empty_like(scores)
        for i in range(len(scores)):  # frames per reply are few; each window summed alone
            end = len(history) - len(scores) + i + 1
            sums[i] = history[max(0, end - self.k) : end].sum(axis=0)
        self._recent = history[-(self.k - 1) :] if self.k > 1 else history[:0]
        return sums.argmax(axis=1).astype(np.int64)


def decide(scores: np.ndarray, spec: InputSpec) -> tuple[npt.NDArray[np.int64], int]:
    """A whole sample's per-frame decisions and its summed answer, offline."""
    decider = Decider(spec)
    return decider.add(scores), decider.predicted
