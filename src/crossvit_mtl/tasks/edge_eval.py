"""Boundary-detection scores as the multi-task literature reports them (SEISM's odsF, oisF, AP).

ATRC, InvPT, TaskPrompter, ASTMT and MTI-Net score edges with SEISM (MATLAB): per threshold the
prediction (an 8-bit PNG read as k/255) is non-maximum suppressed, binarised, thinned and matched
one to one to the ground-truth boundary pixels within ``max_dist`` x the image diagonal. This
module is that pipeline in numpy and scipy, with one deliberate change: the matching is an exact
maximum-cardinality matching (a maximum flow on the pairs within the radius) where BSDS's
``correspondPixels`` runs an approximate assignment on a randomised graph seeded by the clock; the
exact matching gives its upper figure, deterministically.

Everything per image is an int64 array ``(T, 4)`` of ``[cntR, sumR, cntP, sumP]`` per threshold,
so a data set's result is a sum of integers (exact under distributed evaluation):
``summarize(sum of counts, sum of best_counts(counts), thresholds)``.
docs/edges.md gives the protocol step by step and where it may differ from the MATLAB code.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import maximum_flow

#: SEISM's HED thresholds (its parameters/HED.txt, which ATRC, InvPT and TaskPrompter copy): 101 values
HED_THRESHOLDS: tuple[float, ...] = (0.001, *(i / 100 for i in range(1, 100)), 0.999)
#: MTI-Net's evaluation/eval_edge.py writes np.arange(0.01, 1.00, 0.01) as '%.2f': 99 values
MTINET_THRESHOLDS: tuple[float, ...] = tuple(i / 100 for i in range(1, 100))

#: maximum matching distance as a fraction of the image diagonal, as the papers set SEISM's maxDist
MAX_DIST = {"pascal-context": 0.0075, "nyud-v2": 0.011}

#: columns of the per-image counts
COUNT_COLUMNS = ("cntR", "sumR", "cntP", "sumP")


@dataclass(frozen=True)
class EdgeProtocol:
    """How predictions are turned into binary boundary maps before matching."""

    name: str
    thresholds: tuple[float, ...]
    nms: bool  # Dollar's edgesNms on the k/255 map before thresholding (SEISM's read_one_cont_png)


PROTOCOLS = {
    "seism": EdgeProtocol("seism", HED_THRESHOLDS, nms=True),
    # every fifth HED threshold (21): a lower bound of "seism"'s ODS and OIS at a fifth of the cost,
    # for validation during training; never a figure to compare with the papers'
    "seism-quick": EdgeProtocol("seism-quick", HED_THRESHOLDS[::5], nms=True),
    # MTI-Net's read_one_png.m: no NMS, k/255 >= t
    "mtinet": EdgeProtocol("mtinet", MTINET_THRESHOLDS, nms=False),
}


def get_protocol(name: str) -> EdgeProtocol:
    """A protocol by name, or a ValueError listing the names."""
    if name not in PROTOCOLS:
        raise ValueError(f"unknown edge protocol {name!r}; choose from {sorted(PROTOCOLS)}")
    return PROTOCOLS[name]


# --------------------------------------------------------------------------------------------
# ground truth


def seg2bmap(labels: np.ndarray) -> np.ndarray:
    """BSDS's seg2bmap: a pixel is a boundary where its label differs from its east, south or
    south-east neighbour (last row: east only, last column: south only, corner never)."""
    seg = np.asarray(labels)
    if seg.ndim != 2:
        raise ValueError(f"a label map must be 2-D, got shape {seg.shape}")
    bmap = np.zeros(seg.shape, dtype=bool)
    core = seg[:-1, :-1]
    bmap[:-1, :-1] = (core != seg[:-1, 1:]) | (core != seg[1:, :-1]) | (core != seg[1:, 1:])
    bmap[-1, :-1] = seg[-1, :-1] != seg[-1, 1:]
    bmap[:-1, -1] = seg[:-1, -1] != seg[1:, -1]
    bmap[-1, -1] = False
    return bmap


# --------------------------------------------------------------------------------------------
# non-maximum suppression (Piotr Dollar's edgesNmsMex, as SEISM's read_one_cont_png calls it)


def conv_tri(image: np.ndarray, r: int) -> np.ndarray:
    """Dollar's convTri for integer r >= 1: the triangle filter [1..r, r+1, r..1] / (r+1)^2 along
    both axes over a symmetric (edge-repeating) padding; computed in float64, returned float32."""
    f = np.concatenate([np.arange(1, r + 2), np.arange(r, 0, -1)]).astype(np.float64) / (r + 1) ** 2
    out = ndimage.correlate1d(np.asarray(image, dtype=np.float64), f, axis=0, mode="reflect")
    return ndimage.correlate1d(out, f, axis=1, mode="reflect").astype(np.float32)


def edge_orientation(edges: np.ndarray) -> np.ndarray:
    """The edge normal's angle in [0, pi) from the second derivatives of convTri(edges, 4), as
    edgesDetect computes it (0 = along x, pi/2 = along y)."""
    smooth = conv_tri(edges, 4)
    oy, ox = np.gradient(smooth)  # MATLAB's gradient: central inside, one-sided at the borders
    oxx = np.gradient(ox, axis=1)
    oyy, oxy = np.gradient(oy)
    with np.errstate(divide="ignore", invalid="ignore"):
        angle = np.mod(np.arctan(oyy * np.sign(-oxy) / (oxx + np.float32(1e-5))), np.float32(np.pi))
    return np.nan_to_num(angle).astype(np.float32)


def _interp(image: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Bilinear sample at float32 (x, y) clamped to [0, size - 1.001], in float32 as the MEX does."""
    h, w = image.shape
    x = np.clip(x, np.float32(0), np.float32(w - 1.001))
    y = np.clip(y, np.float32(0), np.float32(h - 1.001))
    x0, y0 = x.astype(np.intp), y.astype(np.intp)
    dx0, dy0 = x - x0.astype(np.float32), y - y0.astype(np.float32)
    dx1, dy1 = np.float32(1) - dx0, np.float32(1) - dy0
    return (image[y0, x0] * dx1 * dy1 + image[y0, x0 + 1] * dx0 * dy1
            + image[y0 + 1, x0] * dx1 * dy0 + image[y0 + 1, x0 + 1] * dx0 * dy0)


def edges_nms(edges: np.ndarray, orientation: np.ndarray | None = None, r: int = 1, s: int = 5,
              m: float = 1.01) -> np.ndarray:
    """edgesNmsMex(E, O, r, s, m): a pixel is zeroed where a neighbour up to ``r`` pixels along its
    normal (bilinearly sampled) exceeds its value times ``m``; then values within ``s`` pixels of
    the border are scaled down linearly (x/s). float32 throughout, like the MEX."""
    e0 = np.ascontiguousarray(edges, dtype=np.float32)
    if e0.ndim != 2 or min(e0.shape) < 2:
        raise ValueError(f"edge map must be 2-D and at least 2x2, got shape {e0.shape}")
    if orientation is None:
        orientation = edge_orientation(e0)
    out = e0.copy()
    ys, xs = np.nonzero(e0)
    value = e0[ys, xs] * np.float32(m)
    angle = orientation[ys, xs].astype(np.float32)
    cos, sin = np.cos(angle), np.sin(angle)
    fx, fy = xs.astype(np.float32), ys.astype(np.float32)
    suppressed = np.zeros(len(ys), dtype=bool)
    for d in range(-r, r + 1):
        if d:
            suppressed |= value < _interp(e0, fx + np.float32(d) * cos, fy + np.float32(d) * sin)
    out[ys[suppressed], xs[suppressed]] = 0
    h, w = out.shape
    s = min(s, w // 2, h // 2)
    if s > 0:
        ramp = np.arange(s, dtype=np.float32) / np.float32(s)
        out[:, :s] *= ramp
        out[:, w - s:] *= ramp[::-1]
        out[:s, :] *= ramp[:, None]
        out[h - s:, :] *= ramp[::-1, None]
    return out


# --------------------------------------------------------------------------------------------
# thinning (MATLAB's bwmorph(B, 'thin', Inf); skimage.morphology.thin is the same algorithm)

#: the 8 neighbours x1..x8 of Guo & Hall, counter-clockwise from east, as (dy, dx)
_NEIGHBOURS = ((0, 1), (-1, 1), (-1, 0), (-1, -1), (0, -1), (1, -1), (1, 0), (1, 1))


def _thinning_tables() -> tuple[np.ndarray, np.ndarray]:
    """Deletion tables of the two sub-iterations of Guo & Hall's algorithm A1 (1989; conditions
    G1, G2 and G3 / G3' as Lam, Lee & Suen 1992 give them), indexed by the neighbour bits x1..x8."""
    code = np.arange(256)
    bit = [(code >> k) & 1 for k in range(8)]

    def x(i: int) -> np.ndarray:  # x1..x8, with x9 = x1
        return bit[(i - 1) % 8]

    crossings = sum(((x(2 * i - 1) == 0) & ((x(2 * i) | x(2 * i + 1)) == 1)).astype(int) for i in range(1, 5))
    n1 = sum(x(2 * k - 1) | x(2 * k) for k in range(1, 5))
    n2 = sum(x(2 * k) | x(2 * k + 1) for k in range(1, 5))
    g12 = (crossings == 1) & (np.minimum(n1, n2) >= 2) & (np.minimum(n1, n2) <= 3)
    g3 = ((x(2) | x(3) | (1 - x(8))) & x(1)) == 0
    g3p = ((x(6) | x(7) | (1 - x(4))) & x(5)) == 0
    return g12 & g3, g12 & g3p


_THIN_TABLES = _thinning_tables()


def _thin_padded(image: np.ndarray, width: int, foreground: np.ndarray) -> None:
    """Thin, in place, the flat uint8 0/1 ``image`` of a zero-padded map ``width`` columns wide,
    whose set pixels are ``foreground``. The same parallel sub-iterations as skimage's thin, but
    after the first pass each looks only at pixels next to one deleted since it last looked."""
    steps = np.array([dy * width + dx for dy, dx in _NEIGHBOURS])
    weights = 1 << np.arange(8)
    stamp = np.zeros(len(image), dtype=np.intp)  # scratch for removing repeated indices in O(n)
    pending = [foreground, foreground]
    while len(pending[0]) or len(pending[1]):
        for k in (0, 1):
            candidates = pending[k][image[pending[k]] == 1]
            codes = image[candidates[:, None] + steps] @ weights
            deleted = candidates[_THIN_TABLES[k][codes]]
            image[deleted] = 0
            pending[k] = candidates[:0]
            if len(deleted):
                touched = (deleted[:, None] + steps).ravel()
                for j in (0, 1):
                    both = np.concatenate([pending[j], touched])
                    stamp[both] = np.arange(len(both))
                    pending[j] = both[stamp[both] == np.arange(len(both))]


def thin_binary(binary: np.ndarray) -> np.ndarray:
    """bwmorph(binary, 'thin', Inf): equal to skimage.morphology.thin (the tests check it), several
    times faster on sparse maps such as edges."""
    binary = np.asarray(binary, dtype=bool)
    h, w = binary.shape
    padded = np.zeros((h + 2, w + 2), dtype=np.uint8)
    padded[1:-1, 1:-1] = binary
    flat = padded.ravel()
    _thin_padded(flat, w + 2, np.flatnonzero(flat))
    return padded[1:-1, 1:-1].astype(bool)


# --------------------------------------------------------------------------------------------
# one-to-one matching within a radius


def _offsets(radius: float) -> np.ndarray:
    """Integer (dy, dx) with dy^2 + dx^2 <= radius^2 (BSDS matches at exactly the radius too)."""
    k = int(np.floor(radius))
    dy, dx = np.mgrid[-k:k + 1, -k:k + 1]
    inside = dy * dy + dx * dx <= radius * radius
    return np.stack([dy[inside], dx[inside]], axis=1)


def candidate_pairs(gt: np.ndarray, pixels: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """(index into gt's set pixels in row-major order, flat index of a ``pixels`` pixel) of every
    pair within ``radius``, sorted by the first then the second."""
    h, w = gt.shape
    gy, gx = np.nonzero(gt)
    off = _offsets(radius)
    order = np.argsort(off[:, 0] * w + off[:, 1])  # so each gt pixel's partners come out sorted
    off = off[order]
    rows, cols = [np.zeros(0, np.intp)], [np.zeros(0, np.intp)]
    for start in range(0, len(gy), 4096):  # bounded memory
        y = gy[start:start + 4096, None] + off[None, :, 0]
        x = gx[start:start + 4096, None] + off[None, :, 1]
        inside = (y >= 0) & (y < h) & (x >= 0) & (x < w)
        flat = np.where(inside, y * w + x, 0)
        hit = inside & pixels.ravel()[flat]
        rows.append(np.nonzero(hit)[0] + start)
        cols.append(flat[hit])
    return np.concatenate(rows), np.concatenate(cols)


class _Matcher:
    """Maximum one-to-one matchings between the ground truth and subsets of the candidate pixels
    (one subset per threshold), each an exact maximum flow source -> gt -> pixel -> sink with unit
    capacities (Dinic's algorithm, scipy). Each subset starts from the previous subset's matching
    minus the pairs whose pixel is gone, and only augments it: the flow runs on the residual
    graph. (scipy's maximum_bipartite_matching would give the same number but takes exponential
    time on such lattice-like graphs, scipy issue 26147: seconds to minutes for one threshold.)"""

    def __init__(self, gt_index: np.ndarray, pixel_index: np.ndarray):
        _, self.g = np.unique(gt_index, return_inverse=True)
        _, self.p = np.unique(pixel_index, return_inverse=True)
        self.n_g = int(self.g.max()) + 1 if len(self.g) else 0
        self.n_p = int(self.p.max()) + 1 if len(self.p) else 0
        self.key = self.g * max(self.n_p, 1) + self.p  # sorted: the pairs come sorted by (gt, pixel)
        self.pair_of_g = np.full(self.n_g, -1)  # the matched pair of each node, -1 where free
        self.pair_of_p = np.full(self.n_p, -1)

    def _unmatch(self, pairs: np.ndarray) -> None:
        self.pair_of_g[self.g[pairs]] = -1
        self.pair_of_p[self.p[pairs]] = -1

    def count(self, keep: np.ndarray) -> int:
        """Size of a maximum matching on the pairs where ``keep`` (bool per pair) is set."""
        matched = self.pair_of_g[self.pair_of_g >= 0]
        self._unmatch(matched[~keep[matched]])
        if not keep.any():
            return 0
        n_g, n_p, sink = self.n_g, self.n_p, self.n_g + self.n_p + 1
        matched = self.pair_of_g[self.pair_of_g >= 0]
        open_pairs = np.flatnonzero(keep)
        open_pairs = open_pairs[self.pair_of_g[self.g[open_pairs]] != open_pairs]
        free_g, free_p = np.flatnonzero(self.pair_of_g < 0), np.flatnonzero(self.pair_of_p < 0)
        # residual graph; nodes: source 0, gt 1..n_g, pixels n_g+1..n_g+n_p, sink
        rows = np.concatenate([np.zeros(len(free_g), np.intp), 1 + self.g[open_pairs], 1 + n_g + self.p[matched],
                               1 + n_g + free_p])
        cols = np.concatenate([1 + free_g, 1 + n_g + self.p[open_pairs], 1 + self.g[matched], np.full(len(free_p), sink)])
        graph = csr_matrix((np.ones(len(rows), np.int32), (rows, cols)), shape=(sink + 1, sink + 1))
        result = maximum_flow(graph, 0, sink, method="dinic")
        if result.flow_value:  # swap along the augmenting paths: drop the reversed pairs, add the new
            flow = result.flow.tocoo()
            r, c = flow.row[flow.data > 0], flow.col[flow.data > 0]
            reversed_ = (r > n_g) & (r < sink) & (c >= 1) & (c <= n_g)
            self._unmatch(self.pair_of_g[c[reversed_] - 1])
            forward = (r >= 1) & (r <= n_g) & (c > n_g) & (c < sink)
            new = np.searchsorted(self.key, (r[forward] - 1) * max(n_p, 1) + c[forward] - 1 - n_g)
            self.pair_of_g[self.g[new]] = new
            self.pair_of_p[self.p[new]] = new
        return int((self.pair_of_g >= 0).sum())


def match_count(gt: np.ndarray, pred: np.ndarray, radius: float) -> int:
    """Size of a maximum one-to-one matching between two boolean maps' pixels within ``radius``."""
    g, p = candidate_pairs(np.asarray(gt, bool), np.asarray(pred, bool), radius)
    return _Matcher(g, p).count(np.ones(len(g), dtype=bool))


# --------------------------------------------------------------------------------------------
# per-image counts


def _as_unit_float(pred: np.ndarray) -> np.ndarray:
    """An 8-bit map as k/255 in float32 (MATLAB's im2single); floats are taken as probabilities."""
    pred = np.asarray(pred)
    if pred.dtype == np.uint8:
        return pred.astype(np.float32) / np.float32(255)
    if not np.issubdtype(pred.dtype, np.floating):
        raise ValueError(f"prediction must be uint8 (k/255) or float in [0, 1], got dtype {pred.dtype}")
    return pred.astype(np.float32)


def _bounding_box(valid: np.ndarray) -> tuple[slice, slice]:
    rows, cols = np.flatnonzero(valid.any(axis=1)), np.flatnonzero(valid.any(axis=0))
    return slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)


def edge_counts(pred: np.ndarray, gt: np.ndarray, protocol: str | EdgeProtocol = "seism",
                max_dist: float = MAX_DIST["pascal-context"], valid: np.ndarray | None = None,
                thresholds: tuple[float, ...] | None = None, thin_gt: bool = True) -> np.ndarray:
    """int64 ``(T, 4)`` = [cntR, sumR, cntP, sumP] per threshold for one image.

    ``pred``: uint8 (read as k/255, as SEISM reads a PNG) or float in [0, 1], shape (H, W).
    ``gt``: boolean boundary map (``seg2bmap(labels)`` for a label map); thinned here unless
    ``thin_gt`` is False (one version of SEISM's edgesEvalImg.m thins it, another does not).
    ``valid``: pixels outside it count neither as prediction nor as ground truth; the image is
    first cropped to the mask's bounding box (so padding changes neither the border handling of
    NMS nor the diagonal the radius is measured in). ``thresholds`` overrides the protocol's.
    """
    proto = get_protocol(protocol) if isinstance(protocol, str) else protocol
    ts = np.asarray(proto.thresholds if thresholds is None else thresholds, dtype=np.float64)
    edges = _as_unit_float(pred)
    gt = np.asarray(gt, dtype=bool)
    if edges.ndim != 2 or edges.shape != gt.shape:
        raise ValueError(f"prediction {edges.shape} and ground truth {gt.shape} must be 2-D of one size")
    if valid is not None:
        valid = np.asarray(valid, dtype=bool)
        if valid.shape != gt.shape:
            raise ValueError(f"valid mask {valid.shape} must have the shape of the ground truth {gt.shape}")
        if not valid.any():
            return np.zeros((len(ts), 4), dtype=np.int64)
        box = _bounding_box(valid)
        edges, gt, valid = edges[box], gt[box], valid[box]
    if proto.nms:
        edges = edges_nms(edges)
    h, w = edges.shape
    if thin_gt:
        gt = thin_binary(gt)
    inside = np.ones((h, w), dtype=bool) if valid is None else valid
    gt = gt & inside
    n_gt = int(gt.sum())
    cut = np.maximum(ts, np.finfo(np.float64).eps)  # SEISM: E >= max(eps, t)

    # The binary maps of successive thresholds are nested, so a map is the top `size` pixels of
    # the sorted values and equal sizes are equal maps, scored once. Thinning only removes pixels:
    # every thinned map lies inside the largest binary map, whose pairs are found once.
    order = np.argsort(edges, axis=None, kind="stable")
    sizes = edges.size - np.searchsorted(edges.ravel()[order].astype(np.float64), cut, side="left")
    largest = np.zeros(edges.size, dtype=bool)
    largest[order[edges.size - sizes.max():]] = True
    g_idx, p_idx = candidate_pairs(gt, largest.reshape(h, w) & inside, max_dist * float(np.hypot(h, w)))
    matcher = _Matcher(g_idx, p_idx)
    padded_index = (order // w + 1) * (w + 2) + order % w + 1  # the sorted pixels in the padded map
    pair_pixels = (p_idx // w + 1) * (w + 2) + p_idx % w + 1
    inside_padded = np.pad(inside, 1).ravel()

    counts = np.zeros((len(ts), 4), dtype=np.int64)
    by_size: dict[int, tuple[int, int]] = {}
    by_pairs: dict[bytes, int] = {}
    for i, size in enumerate(sizes.tolist()):
        if size not in by_size:
            image = np.zeros((h + 2) * (w + 2), dtype=np.uint8)
            foreground = padded_index[edges.size - size:]
            image[foreground] = 1
            _thin_padded(image, w + 2, foreground)
            keep = image[pair_pixels].astype(bool)
            key = keep.tobytes()  # the matching depends on the kept pairs alone
            if key not in by_pairs:
                by_pairs[key] = matcher.count(keep)
            by_size[size] = (by_pairs[key], int(image[inside_padded].sum()))
        matched, n_pred = by_size[size]
        counts[i] = (matched, n_gt, matched, n_pred)
    return counts


# --------------------------------------------------------------------------------------------
# data-set summary


def precision_recall(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(precision, recall, F) per row of ``[cntR, sumR, cntP, sumP]`` with SEISM's conventions
    (gather_measure.m): no ground truth and no match -> R 1, P 0; no prediction -> R 0, P 1
    (also when neither exists); F = 2PR / (P + R), 0 where P + R = 0."""
    c = np.asarray(counts, dtype=np.float64).reshape(-1, 4)
    cnt_r, sum_r, cnt_p, sum_p = c.T
    precision, recall = np.zeros(len(c)), np.zeros(len(c))
    no_gt = (sum_r == 0) & (cnt_p == 0)
    precision[no_gt], recall[no_gt] = 0.0, 1.0
    no_pred = (sum_p == 0) & (cnt_r == 0)
    precision[no_pred], recall[no_pred] = 1.0, 0.0
    both = (sum_p != 0) & (cnt_r != 0)
    recall[both], precision[both] = cnt_r[both] / sum_r[both], cnt_p[both] / sum_p[both]
    total = precision + recall
    f = np.divide(2 * precision * recall, total, out=np.zeros(len(c)), where=total != 0)
    return precision, recall, f


def best_counts(counts: np.ndarray) -> np.ndarray:
    """The image's counts at its own best threshold: the image's contribution to OIS, summed over
    images like the per-threshold counts. SEISM picks the first of the highest F as written to
    its result files ('%f', six decimals), and so does this."""
    _, _, f = precision_recall(counts)
    written = np.array([float(f"{value:f}") for value in f])
    return np.asarray(counts, dtype=np.int64)[int(np.argmax(written))].copy()


def average_precision(precision: np.ndarray, recall: np.ndarray) -> float:
    """SEISM's general_ap.m: keep one point per distinct recall (the lowest threshold's), linearly
    interpolate precision at recall 0, 0.01, ..., 1 inside the curve's recall range, sum / 100."""
    _, first = np.unique(recall, return_index=True)
    if len(first) < 2:
        return 0.0
    r, p = recall[first], precision[first]  # sorted by recall
    grid = np.arange(101) / 100
    inside = (grid >= r[0]) & (grid <= r[-1])
    return float(np.interp(grid[inside], r, p).sum() / 100)


@dataclass(frozen=True)
class EdgeSummary:
    """A data set's boundary scores; F, precision and recall in [0, 1]."""

    ods_f: float
    ods_precision: float
    ods_recall: float
    ods_threshold: float
    ois_f: float
    ap: float

    def as_dict(self) -> dict[str, float]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


def summarize(counts: np.ndarray, ois_counts: np.ndarray, thresholds: tuple[float, ...]) -> EdgeSummary:
    """ODS (best F of the summed counts, no interpolation between thresholds), OIS (F of the summed
    per-image best counts) and AP, from ``counts`` (T, 4) and ``ois_counts`` (4,) sums."""
    counts = np.asarray(counts, dtype=np.int64)
    if counts.shape != (len(thresholds), 4):
        raise ValueError(f"counts have shape {counts.shape}, expected ({len(thresholds)}, 4)")
    precision, recall, f = precision_recall(counts)
    best = int(np.argmax(f))
    _, _, ois = precision_recall(np.asarray(ois_counts))
    return EdgeSummary(ods_f=float(f[best]), ods_precision=float(precision[best]),
                       ods_recall=float(recall[best]), ods_threshold=float(thresholds[best]),
                       ois_f=float(ois[0]), ap=average_precision(precision, recall))
