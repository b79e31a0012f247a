"""The detector's forward pass, run once per batch, and the class-activation map of each box it kept.

Why not `YOLO(weights).predict` plus a CAM library: predict runs under inference mode (no gradients), its wrapper's
`.eval()` starts training, and CAM libraries do not know YOLO's tuple outputs. So this module runs the same steps
ultralytics' predictor runs (letterbox as `BasePredictor.pre_transform`, the fused network, NMS and box scaling as
`DetectionPredictor`) with two additions: NMS reports the anchor each kept box came from (`return_idxs`), and the
layer outputs an explanation needs are kept, so a map costs one small backward, never a second forward.

Explanations (`explain`): the activations of the target layers (default: the Detect head's inputs, i.e. the neck's
P3-P5 feature maps) are made leaves, the network is re-run from there to the head's raw class logits, and the logit
of each kept box's class at its anchor is differentiated with respect to them, all boxes of an image in one batched
backward (`is_grads_batched`). `pipelines/predict/cam.py` turns activations and gradients into maps.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pipelines.predict import cam

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Boxes:
    """What the detector kept on one image, in the source image's pixels (x_min, y_min, x_max, y_max)."""

    xyxy: np.ndarray  # (K, 4) float
    confidence: np.ndarray  # (K,) float
    class_index: np.ndarray  # (K,) int
    anchor: np.ndarray  # (K,) int: the anchor NMS kept, the position of the logit an explanation differentiates

    def __len__(self) -> int:
        return int(self.xyxy.shape[0])


@dataclass
class ForwardState:
    """The layer outputs of one image that an explanation re-runs the network from (detached, batch of one)."""

    outputs: dict[int, torch.Tensor]
    input_hw: tuple[int, int]  # letterboxed network input
    source_hw: tuple[int, int]  # the source image


class Detector:
    """A YOLO detection model ready for reading and explaining, on CPU or one GPU.

    Args:
        weights: ultralytics `.pt` weights.
        imgsz: inference size (the model's training size).
        conf: confidence threshold of a kept box.
        iou: NMS IoU threshold.
        target_layers: layer indices an explanation's map is taken on; None = the Detect head's inputs.
        device: torch device string.
    """

    def __init__(
        self,
        weights: Path,
        *,
        imgsz: int,
        conf: float,
        iou: float = 0.7,
        target_layers: Sequence[int] | None = None,
        device: str = "cpu",
    ) -> None:
        from ultralytics import YOLO

        network = YOLO(str(weights)).model
        self.device = torch.device(device)
        # Fused Conv+BN, as ultralytics' AutoBackend does for inference: same outputs, fewer kernels; gradients
        # through a fused convolution equal those through the pair.
        self.network = network.fuse(verbose=False).to(self.device).float().eval()
        for p in self.network.parameters():
            p.requires_grad_(False)
        self.layers = list(self.network.model)
        self.head = self.layers[-1]
        self.names: dict[int, str] = dict(self.network.names)
        self.stride = int(max(int(s) for s in self.network.stride))
        self.imgsz, self.conf, self.iou = int(imgsz), float(conf), float(iou)
        self.target_layers = tuple(sorted(target_layers if target_layers else self.head.f))
        if max(self.target_layers) >= self.head.i:
            raise ValueError(f"target layers {self.target_layers} must precede the Detect head (layer {self.head.i})")
        # The head's inputs as targets (the default) need only the classification branch re-run from them;
        # deeper targets re-run the network from the first one.
        self._head_inputs_only = set(self.target_layers) <= set(self.head.f)
        first = self.target_layers[0]
        if self._head_inputs_only:
            self._resume_needs = set(self.head.f)
        else:  # everything a layer after the first target reads from at or before it
            self._resume_needs = (
                {
                    j
                    for m in self.layers[first + 1 :]
                    for j in ([m.f] if isinstance(m.f, int) else m.f)
                    if 0 <= j <= first
                }
                | {first}
                | set(self.target_layers)
            )

    # ------------------------------------------------------------------------------------------------- reading
    def letterbox(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """The network input: `BasePredictor.pre_transform`'s letterbox, RGB, 0-1, NCHW."""
        from ultralytics.data.augment import LetterBox

        same_shapes = len({im.shape for im in images}) == 1
        box = LetterBox(self.imgsz, auto=same_shapes, stride=self.stride)
        batch = np.stack([box(image=im) for im in images])[..., ::-1].transpose(0, 3, 1, 2)
        return torch.from_numpy(np.ascontiguousarray(batch)).to(self.device).float().div_(255.0)

    def _run(self, x: torch.Tensor, keep: set[int]) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        """`BaseModel._predict_once`, keeping the outputs of `keep`; returns the head's decoded output."""
        y: list[torch.Tensor | None] = []
        kept: dict[int, torch.Tensor] = {}
        save = set(self.network.save)
        for m in self.layers:
            if m.f != -1:
                x = y[m.f] if isinstance(m.f, int) else [x if j == -1 else y[j] for j in m.f]
            x = m(x)
            y.append(x if m.i in save else None)
            if m.i in keep:
                kept[m.i] = x
        return x[0] if isinstance(x, tuple) else x, kept

    def detect(
        self, images: Sequence[np.ndarray], *, keep_state: bool = False
    ) -> tuple[list[Boxes], list[ForwardState]]:
        """Boxes on each image (H x W x 3 uint8, as `pipelines.imaging.model_image` makes them).

        keep_state: also return what `explain` needs for each image (the outputs of a few layers; without it the
        forward keeps nothing).
        """
        from ultralytics.utils import nms, ops

        if not images:
            return [], []
        batch = self.letterbox(images)
        with torch.inference_mode():
            decoded, kept = self._run(batch, self._resume_needs if keep_state else set())
            kept_boxes, anchors = nms.non_max_suppression(
                decoded, self.conf, self.iou, max_det=300, nc=0, end2end=False, return_idxs=True
            )
        results: list[Boxes] = []
        states: list[ForwardState] = []
        for b, (pred, idx) in enumerate(zip(kept_boxes, anchors, strict=True)):
            src_hw = images[b].shape[:2]
            xyxy = ops.scale_boxes(batch.shape[2:], pred[:, :4].clone(), src_hw)
            results.append(
                Boxes(
                    xyxy=xyxy.cpu().numpy().astype(np.float64),
                    confidence=pred[:, 4].cpu().numpy().astype(np.float64),
                    class_index=pred[:, 5].cpu().numpy().astype(np.int64),
                    anchor=idx.cpu().numpy().astype(np.int64).reshape(-1),
                )
            )
            if keep_state:
                # clone() leaves inference mode's tensors behind: an inference tensor cannot join an autograd graph.
                outputs = {i: _slice(t, b) for i, t in kept.items()}
                states.append(ForwardState(outputs, tuple(batch.shape[2:]), tuple(src_hw)))
        return results, states

    # ---------------------------------------------------------------------------------------------- explaining
    @property
    def _cls_heads(self) -> torch.nn.ModuleList:
        """The Detect head's classification branches, one per level (the one-to-one set on an end-to-end head)."""
        return self.head.one2one_cv3 if getattr(self.head, "end2end", False) else self.head.cv3

    def _deep_logits(self, outputs: dict[int, torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The head's raw class logits (1 x nc x A) re-computed from the first target layer (made a leaf) onwards,
        and the target activations the logits are differentiated against."""
        first = self.target_layers[0]
        y = {i: outputs[i].clone() for i in sorted(self._resume_needs)}
        y[first].requires_grad_(True)
        x = y[first]
        targets = {first: x}
        for m in self.layers[first + 1 : -1]:
            if m.f != -1:
                x = y[m.f] if isinstance(m.f, int) else [x if j == -1 else y[j] for j in m.f]
            x = m(x)
            y[m.i] = x
            if m.i in self.target_layers:
                targets[m.i] = x
        feats = [y[j] for j in self.head.f]
        batch = feats[0].shape[0]
        logits = torch.cat([self._cls_heads[k](f).view(batch, self.head.nc, -1) for k, f in enumerate(feats)], -1)
        return logits, [targets[i] for i in self.target_layers]

    def explain(
        self, state: ForwardState, boxes: Boxes, method: str = "hirescam", only: Sequence[int] | None = None
    ) -> list[np.ndarray | None]:
        """One map per kept box, H x W float32 in [0, 1] over the source image (zeros where no evidence); with
        `only`, maps for those boxes and None for the others (no backward is spent on a box nobody needs)."""
        wanted = list(range(len(boxes))) if only is None else sorted(set(only))
        out: list[np.ndarray | None] = [None] * len(boxes)
        if not wanted:
            return out
        if method == "eigencam":  # gradient-free and class-agnostic: one map for the image, the same for every box
            acts = [state.outputs[i][0] for i in self.target_layers]
            one = cam.to_source([cam.eigencam(a) for a in acts], state.input_hw, state.source_hw)
            for k in wanted:
                out[k] = one.copy()
            return out
        subset = Boxes(*(getattr(boxes, f)[wanted] for f in ("xyxy", "confidence", "class_index", "anchor")))
        with torch.enable_grad():
            if self._head_inputs_only:
                for rows, maps in self._head_input_maps(state, subset, method):
                    for k, heat in zip(rows, cam.to_source_stack(maps, state.input_hw, state.source_hw), strict=True):
                        out[wanted[k]] = heat
            else:
                for k, layer_maps in enumerate(self._deep_maps(state, subset, method)):
                    out[wanted[k]] = cam.to_source(layer_maps, state.input_hw, state.source_hw)
        return out

    def _batched_grads(self, chosen: torch.Tensor, acts: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """d chosen[k] / d acts for every k at once (K x ...), falling back to one backward per box."""
        eye = torch.eye(len(chosen), device=chosen.device, dtype=chosen.dtype)
        try:
            return torch.autograd.grad(chosen, acts, grad_outputs=eye, is_grads_batched=True)
        except RuntimeError:  # an op without a batching rule
            per_box = [torch.autograd.grad(chosen[k], acts, retain_graph=True) for k in range(len(chosen))]
            return tuple(torch.stack([g[li] for g in per_box]) for li in range(len(acts)))

    def _head_input_maps(
        self, state: ForwardState, boxes: Boxes, method: str
    ) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
        """Head inputs as targets: a box's logit depends only on its own level's features through that level's
        classification branch, so only the levels holding kept anchors are re-run and differentiated. Yields, per
        level, the boxes' positions and their maps (K x h x w)."""
        sizes = [int(state.outputs[j].shape[2] * state.outputs[j].shape[3]) for j in self.head.f]
        starts = np.concatenate([[0], np.cumsum(sizes)])
        level_of = np.searchsorted(starts, boxes.anchor, side="right") - 1
        for level in np.unique(level_of):
            layer = self.head.f[level]
            rows = np.flatnonzero(level_of == level)
            if layer not in self.target_layers:
                continue
            leaf = state.outputs[layer].clone().requires_grad_(True)
            logits = self._cls_heads[level](leaf).view(self.head.nc, -1)
            local = torch.as_tensor(boxes.anchor[rows] - starts[level], device=leaf.device)
            chosen = logits[torch.as_tensor(boxes.class_index[rows], device=leaf.device), local]
            (grads,) = self._batched_grads(chosen, [leaf])
            yield rows, cam.gradient_map(leaf[0].detach(), grads[:, 0], method)

    def _deep_maps(self, state: ForwardState, boxes: Boxes, method: str) -> list[list[torch.Tensor]]:
        """Deeper targets: re-run from the first target to the logits, differentiate against every target."""
        logits, acts = self._deep_logits(state.outputs)
        cls = torch.as_tensor(boxes.class_index, device=logits.device)
        anchor = torch.as_tensor(boxes.anchor, device=logits.device)
        grads = self._batched_grads(logits[0, cls, anchor], acts)
        return [
            [cam.gradient_map(a[0].detach(), g[k][0], method) for a, g in zip(acts, grads, strict=True)]
            for k in range(len(boxes))
        ]


def _slice(t: torch.Tensor, b: int) -> torch.Tensor:
    return t[b : b + 1].clone()
