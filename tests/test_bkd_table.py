"""The accuracy table reader (SpaceEvo §4.5): strict validation, exact rows, the estimator's held-out error,
and the named table actor's batching and restart."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import spearmanr

from nasq.bkd.table import LUT_CSV, LUT_JSON, AccuracyLUT, LUTServer, all_settings, parse_setting, write_lut
from nasq.errors import DataError
from nasq.qt_score import qt_details
from nasq.spaces.spaceevo import space_from_name
from nasq.spaces.spaceevo_subnet import setting_key

TINY = space_from_name("spaceevo-tiny")
H = TINY.hyperspace
TYPE_BASE = {"mbv1": 0.30, "mbv2": 0.20, "mbv3": 0.22, "resnet_bottleneck": 0.26,
             "resnet_bottleneck_se": 0.25, "fused_mb": 0.17, "fused_mb_se": 0.19}
EVALUATED = 0.4  # share of each (stage, type)'s settings the hand-made table holds


def true_loss(stage: int, block_type: str, rows: np.ndarray) -> np.ndarray:
    """The hand-made 'measured' NSR: falls with capacity (depth, width, expand, kernel); not the
    estimator's log-linear form (a saturating power law plus an input-width ripple)."""
    rows = np.atleast_2d(rows)
    d = (rows.shape[1] - 2) // 3
    w, k, e = rows[:, 2:2 + d], rows[:, 2 + d:2 + 2 * d], rows[:, 2 + 2 * d:]
    capacity = (w * e * (1 + k / 3)).sum(axis=1)  # zero beyond the depth
    ripple = 1 + 0.03 * np.cos(rows[:, 0])
    return TYPE_BASE[block_type] * (1 + 0.25 * stage) / (1 + 0.02 * capacity ** 0.7) * ripple


def int8_of(fp32: np.ndarray, block_type: str) -> np.ndarray:
    return fp32 * (1.3 if block_type.endswith("_se") or block_type == "mbv3" else 1.1)


def tiny_records(share: float = EVALUATED, seed: int = 0) -> tuple[list[dict], dict]:
    """Rows of a hand-made table over spaceevo-tiny: a seeded ``share`` of every (stage, type)'s settings,
    plus, per pair, the mask of written rows over :func:`all_settings`."""
    rng = np.random.default_rng(seed)
    records, written = [], {}
    for stage in range(H.num_stages):
        for t in H.types:
            rows = all_settings(H, stage, t)
            keep = rng.random(len(rows)) < share
            written[(stage, t)] = keep
            fp32 = true_loss(stage, t, rows)
            for r, f, q in zip(rows[keep], fp32[keep], int8_of(fp32, t)[keep]):
                records.append({"stage": stage, "block_type": t, "setting": setting_key(r),
                                "nsr_fp32": repr(float(f)), "nsr_int8": repr(float(q)),
                                "flops": 1000 * int(r[1]), "params": 10 * int(r[1])})
    return records, written


META = {"hyperspace": "spaceevo-tiny", "resolution": 16, "teacher": "hand-made", "data": "none",
        "seconds": {"0": 0.0}}


def extreme_setting(h, stage: int, block_type: str, pick=max) -> str:
    """Key of the uniform setting taking ``pick`` (max: the largest, min: the smallest) of every choice
    (input width, depth, width, kernel, expand) of (``stage``, ``block_type``) in hyperspace ``h``."""
    d = max(h.depths)
    cin = pick(h.widths[stage - 1]) if stage else h.stem_width
    depth, pad = pick(h.depths), [0] * (d - pick(h.depths))
    w, k, e = pick(h.widths[stage]), pick(h.kernels), pick(h.expands_of(block_type))
    return setting_key([cin, depth, *[w] * depth, *pad, *[k] * depth, *pad, *[e] * depth, *pad])


def assert_table_is_plausible(records: list[dict], h, min_win: float = 2 / 3, min_log_ratio: float = 0.1,
                              max_rho: float = -0.25, int8_tol: float = 0.02) -> dict:
    """Assert that a §4.5 table's numbers mean something (rows as ``lut.csv`` dicts, str or numbers):

    - fp32 NSR falls with capacity: the largest setting beats the smallest in at least ``min_win`` of the
      (stage, type) pairs, by ``log(small / large) >= min_log_ratio`` on average over the pairs, and the
      Spearman correlation of fp32 NSR with params within a pair is ``<= max_rho`` on average;
    - quantization ran: ``nsr_int8 != nsr_fp32`` in every row, and on average INT8 is not below fp32 by
      more than ``int8_tol`` (relative);
    - the largest setting has strictly more FLOPs and params than the smallest in every pair.

    Returns the observed statistics.
    """
    by_pair: dict = {}
    for r in records:
        by_pair.setdefault((int(r["stage"]), str(r["block_type"])), {})[str(r["setting"])] = r
    wins, ratios, rhos = [], [], []
    for (i, t), part in sorted(by_pair.items()):
        big, small = part[extreme_setting(h, i, t, max)], part[extreme_setting(h, i, t, min)]
        for c in ("flops", "params"):
            assert float(big[c]) > float(small[c]), f"stage {i} {t}: {c} of the largest setting not above smallest"
        wins.append(float(big["nsr_fp32"]) < float(small["nsr_fp32"]))
        ratios.append(math.log(float(small["nsr_fp32"]) / float(big["nsr_fp32"])))
        rhos.append(spearmanr([float(r["params"]) for r in part.values()],
                              [float(r["nsr_fp32"]) for r in part.values()])[0])
    fp32 = np.array([float(r["nsr_fp32"]) for r in records])
    int8 = np.array([float(r["nsr_int8"]) for r in records])
    stats = {"win": float(np.mean(wins)), "log_ratio": float(np.mean(ratios)), "rho": float(np.mean(rhos)),
             "int8_same": int(np.sum(np.abs(int8 - fp32) <= 1e-9 * fp32)),
             "int8_rel": float(np.mean((int8 - fp32) / fp32))}
    assert stats["win"] >= min_win, f"largest setting beats smallest in only {stats['win']:.0%} of pairs"
    assert stats["log_ratio"] >= min_log_ratio, f"largest beats smallest by log ratio {stats['log_ratio']:.3f}"
    assert stats["rho"] <= max_rho, f"fp32 NSR vs params Spearman {stats['rho']:.2f} (capacity ignored)"
    assert stats["int8_same"] == 0, f"{stats['int8_same']} rows with int8 NSR == fp32 NSR (no quantization)"
    assert stats["int8_rel"] >= -int8_tol, f"int8 NSR below fp32 by {-stats['int8_rel']:.1%} on average"
    return stats


def write_tiny_lut(directory: Path, share: float = EVALUATED) -> Path:
    """A LUT directory in the contract format over spaceevo-tiny (deterministic)."""
    records, _ = tiny_records(share)
    return write_lut(directory, records, META)


@pytest.fixture(scope="module")
def lut_dir(tmp_path_factory) -> Path:
    return write_tiny_lut(tmp_path_factory.mktemp("lut") / "tiny")


@pytest.fixture(scope="module")
def lut(lut_dir) -> AccuracyLUT:
    return AccuracyLUT.load(lut_dir)


def test_setting_keys_parse_back_exactly():
    rows = all_settings(H, 1, "mbv2")
    assert all(np.array_equal(parse_setting(setting_key(r), max(H.depths)), r) for r in rows[::7])
    for bad in ("i16:c24_k3_e3.0", "i016:c24_k3_e3", "c24_k3_e3", "i16:c24_k3_e3,c24_k3_e3,c24_k3_e3"):
        with pytest.raises(ValueError):
            parse_setting(bad, max(H.depths))


def test_table_plausibility_check_catches_corrupted_tables():
    """The check that tests/test_bkd_build.py applies to its built table passes on the complete hand-made
    table and fails on each corruption it is meant to catch."""
    records = [r for r in tiny_records(share=1.0)[0] if r["block_type"] in ("mbv1", "fused_mb")]
    stats = assert_table_is_plausible(records, H)
    assert stats["win"] == 1.0 and stats["rho"] < -0.3 and stats["int8_rel"] > 0.09  # params: 10 x depth
    extremes = {(i, t): (extreme_setting(H, i, t, max), extreme_setting(H, i, t, min))
                for i in range(H.num_stages) for t in ("mbv1", "fused_mb")}

    def swapped(r: dict) -> dict:  # the largest and smallest settings' losses exchanged
        big, small = extremes[(r["stage"], r["block_type"])]
        other = {big: small, small: big}.get(r["setting"])
        return {**r, **{c: by_key[(r["stage"], r["block_type"], other)][c] for c in ("nsr_fp32", "nsr_int8")}
                } if other else r

    by_key = {(r["stage"], r["block_type"], r["setting"]): r for r in records}
    perm = np.random.default_rng(0).permutation(len(records))
    cheaper = {extremes[(r["stage"], r["block_type"])][0] for r in records}
    corrupt = {
        "loss column shuffled": ([{**r, "nsr_fp32": records[j]["nsr_fp32"]} for r, j in zip(records, perm)],
                                 "Spearman|beats"),
        "largest and smallest swapped": ([swapped(r) for r in records], "beats smallest"),
        "no quantization": ([{**r, "nsr_int8": r["nsr_fp32"]} for r in records], "no quantization"),
        "int8 far below fp32": ([{**r, "nsr_int8": 0.9 * float(r["nsr_fp32"])} for r in records],
                                "below fp32 by 10"),
        "largest not costlier": ([{**r, "params": 10} if r["setting"] in cheaper else r for r in records],
                                 "params of the largest"),
    }
    for name, (bad, match) in corrupt.items():
        with pytest.raises(AssertionError, match=match):  # a miss reports DID NOT RAISE for case `name`
            assert_table_is_plausible(bad, H)


def test_evaluated_rows_are_answered_exactly(lut):
    records, _ = tiny_records()
    by_pair: dict = {}
    for r in records:
        by_pair.setdefault((r["stage"], r["block_type"]), []).append(r)
    for (stage, t), recs in list(by_pair.items())[::5]:
        rows = np.array([parse_setting(r["setting"], max(H.depths)) for r in recs])
        int8, exact = lut.losses(stage, t, rows)
        assert exact == len(rows)
        assert int8.tolist() == [float(r["nsr_int8"]) for r in recs]  # exact, not approximately
        assert lut.losses(stage, t, rows, "nsr_fp32")[0].tolist() == [float(r["nsr_fp32"]) for r in recs]
    assert lut.hyperspace == H and lut.hyperspace_name == "spaceevo-tiny:16" and not lut.missing_pairs()


def test_estimator_error_on_held_out_rows(lut):
    """Fit without a held-out 30 % of each pair's rows; the estimate must track the truth on them and beat
    the pair's median by far (an estimator that ignores the setting fails here)."""
    rng = np.random.default_rng(1)
    errors, baseline, rhos = [], [], []
    for stage, t in lut.pairs():
        rows, truth = lut.rows[(stage, t)], lut.values[(stage, t)]["nsr_int8"]
        out = rng.random(len(rows)) < 0.3
        est = lut.estimate(stage, t, rows[out], exclude=out)
        errors.append(np.abs(est / truth[out] - 1))
        baseline.append(np.abs(np.median(truth[~out]) / truth[out] - 1))
        if out.sum() >= 10:
            rhos.append(spearmanr(est, truth[out])[0])
    err, base = np.concatenate(errors), np.concatenate(baseline)
    assert np.median(err) < 0.06 and np.percentile(err, 90) < 0.15
    assert np.median(err) < 0.3 * np.median(base)
    assert np.median(rhos) > 0.9


def test_settings_not_in_the_table_get_the_estimate(lut):
    _, written = tiny_records()
    stage, t = 2, "fused_mb"
    rows = all_settings(H, stage, t)
    miss = ~written[(stage, t)]
    got, exact = lut.losses(stage, t, rows[miss])
    assert exact == 0 and np.all(np.isfinite(got)) and np.all(got > 0)
    assert np.median(np.abs(got / int8_of(true_loss(stage, t, rows[miss]), t) - 1)) < 0.06


def test_qt_score_runs_on_the_table_for_any_space(lut):
    rng = np.random.default_rng(3)
    for _ in range(3):
        cand = TINY.candidate(TINY.random(rng))
        res = qt_details(cand, [1.0, 2.0], lut, lambda specs: np.full(len(specs), 0.1), n_subnets=300)
        assert np.isfinite(res.score) and res.feasible[1] == res.subnets


def test_version_is_a_hash_of_the_contents(tmp_path, lut):
    other = write_tiny_lut(tmp_path / "copy")
    assert AccuracyLUT.load(other).version == lut.version
    text = (other / LUT_CSV).read_text().splitlines()
    text[1] = text[1].replace(text[1].split(",")[4], "0.5", 1)
    (other / LUT_CSV).write_text("\n".join(text) + "\n")
    assert AccuracyLUT.load(other).version != lut.version


def _csv_edit(line: int, col: str, value: str):
    def damage(d: Path) -> None:
        lines = (d / LUT_CSV).read_text().splitlines()
        header = lines[0].split(",")
        cells = lines[line].split(",")
        cells[header.index(col)] = value
        lines[line] = ",".join(cells)
        (d / LUT_CSV).write_text("\n".join(lines) + "\n")
    return damage


def _json_edit(**changes):
    def damage(d: Path) -> None:
        doc = json.loads((d / LUT_JSON).read_text())
        doc.update(changes)
        (d / LUT_JSON).write_text(json.dumps(doc))
    return damage


def _duplicate_row(d: Path) -> None:
    lines = (d / LUT_CSV).read_text().splitlines()
    (d / LUT_CSV).write_text("\n".join(lines + [lines[1]]) + "\n")


DAMAGE = {
    "no csv": (lambda d: (d / LUT_CSV).unlink(), "has no lut.csv"),
    "no json": (lambda d: (d / LUT_JSON).unlink(), "has no lut.json"),
    "json garbage": (lambda d: (d / LUT_JSON).write_text("{not json"), "not valid JSON"),
    "foreign json": (_json_edit(format="nasq-latency-predictor"), "not a nasq accuracy table"),
    "format version": (_json_edit(format_version=99), "format version 99"),
    "format version true": (_json_edit(format_version=True), "format version True"),
    "format version float": (_json_edit(format_version=1.0), "format version 1.0"),
    "unknown hyperspace": (_json_edit(hyperspace="spaceevo-huge"), "spaceevo-huge"),
    "missing column": (lambda d: (d / LUT_CSV).write_text(
        (d / LUT_CSV).read_text().replace("nsr_int8", "nsr_int4", 1)), "lacks column(s) ['nsr_int8']"),
    "bad stage": (_csv_edit(1, "stage", "7"), "stage '7' must be 0..2"),
    "bad type": (_csv_edit(1, "block_type", "mbv9"), "unknown block type 'mbv9'"),
    "width outside": (_csv_edit(1, "setting", "i8:c12_k3_e3"), "width 12 outside"),
    "non-canonical": (_csv_edit(1, "setting", "i8:c8_k3_e3.0"), "canonical form"),
    "negative loss": (_csv_edit(1, "nsr_int8", "-0.1"), "nsr_int8 '-0.1'"),
    "nan loss": (_csv_edit(2, "nsr_fp32", "nan"), "nsr_fp32 'nan'"),
    "duplicate": (_duplicate_row, "appears twice"),
    "empty": (lambda d: (d / LUT_CSV).write_text((d / LUT_CSV).read_text().splitlines()[0] + "\n"),
              "no rows"),
}


@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_bad_table_is_one_data_error_line_naming_the_fix(tmp_path, case):
    d = write_tiny_lut(tmp_path / "t", share=0.05)
    AccuracyLUT.load(d)  # sound before the damage
    damage, needle = DAMAGE[case]
    damage(d)
    with pytest.raises(DataError) as info:
        AccuracyLUT.load(d)
    msg = str(info.value)
    assert needle in msg and "\n" not in msg
    assert "nasq lut build" in msg


def test_missing_folder_and_missing_pair_are_data_errors(tmp_path):
    with pytest.raises(DataError, match="is not a folder"):
        AccuracyLUT.load(tmp_path / "nowhere")
    records = [r for r in tiny_records(0.1)[0] if (r["stage"], r["block_type"]) != (1, "mbv3")]
    table = AccuracyLUT.load(write_lut(tmp_path / "part", records, META))
    assert table.missing_pairs() == [(1, "mbv3")]
    with pytest.raises(DataError, match="no row for stage 1 block type 'mbv3'"):
        table.stage_losses(1, "mbv3", all_settings(H, 1, "mbv3")[:2])


# -- the named actor ------------------------------------------------------------------------------------
def _requests(n_per_stage: int = 20) -> list[tuple[int, str, list]]:
    return [(s, t, all_settings(H, s, t)[::37][:n_per_stage].tolist())
            for s in range(H.num_stages) for t in ("mbv2", "fused_mb_se")]


@pytest.mark.ray
def test_actor_answers_many_queries_in_one_call_with_the_version(ray_session, lut_dir, lut):
    from nasq.trainables.spaceevo import lut_actor_name, start_lut

    actor = start_lut(lut_dir)
    reqs = _requests()
    answer = ray_session.get(actor.query.remote(reqs))
    assert answer["version"] == lut.version
    assert len(answer["losses"]) == len(reqs)
    for (stage, t, rows), got in zip(reqs, answer["losses"]):
        assert got == lut.stage_losses(stage, t, np.array(rows)).tolist()
    assert answer == LUTServer(str(lut_dir)).query(reqs)  # the actor only wraps the plain class
    assert ray_session.get_actor(lut_actor_name(lut.version), namespace="nasq")._actor_id == actor._actor_id


@pytest.mark.ray
def test_killed_actor_restarts_and_answers_with_the_same_version(ray_session, lut_dir, lut):
    from nasq.trainables.spaceevo import get_actor, lut_actor_name, start_lut

    actor = start_lut(lut_dir)
    before = ray_session.get(actor.info.remote())
    ray_session.kill(actor, no_restart=False)
    deadline, after = time.monotonic() + 60, {}
    while not after.get("restarted") and time.monotonic() < deadline:
        try:
            after = ray_session.get(actor.info.remote(), timeout=30)
        except (ray_session.exceptions.RayActorError, ray_session.exceptions.GetTimeoutError):
            time.sleep(0.3)
    assert after.get("restarted"), "the killed table actor was not restarted by Ray"
    assert after["pid"] != before["pid"] and after["version"] == before["version"] == lut.version
    reqs = _requests(5)
    answer = ray_session.get(get_actor(lut_actor_name(lut.version)).query.remote(reqs))
    assert answer["version"] == lut.version
    assert answer["losses"][0] == lut.stage_losses(*reqs[0][:2], np.array(reqs[0][2])).tolist()


def test_lut_json_may_name_the_builders_uniform_mean_estimator(tmp_path):
    pytest.importorskip("nasq.bkd.rows")
    rows = all_settings(H, 1, "mbv2")
    d = max(H.depths)
    blocks = [[tuple(r[[2 + j, 2 + d + j, 2 + 2 * d + j]]) for j in range(int(r[1]))] for r in rows]
    uniform = np.array([len(set(b)) == 1 for b in blocks])
    loss = true_loss(1, "mbv2", rows)
    records = [{"stage": 1, "block_type": "mbv2", "setting": setting_key(r), "nsr_fp32": float(v),
                "nsr_int8": float(v), "flops": 0, "params": 0} for r, v in zip(rows[uniform], loss[uniform])]
    table = AccuracyLUT.load(write_lut(tmp_path / "u", records, {**META, "estimator": "uniform-mean-v1"}))
    mixed = rows[~uniform][:5]
    uni = {setting_key(r): v for r, v in zip(rows[uniform], loss[uniform])}
    expect = []
    for r in mixed:
        keys = [setting_key(np.array([r[0], r[1], w, w, k, k, e, e])) for w, k, e in
                (r[[2 + j, 2 + d + j, 2 + 2 * d + j]] for j in range(int(r[1])))]
        expect.append(np.mean([uni[k] for k in keys]))
    assert table.stage_losses(1, "mbv2", mixed) == pytest.approx(expect, rel=1e-12)
    bad = write_lut(tmp_path / "b", records, {**META, "estimator": "oracle"})
    with pytest.raises(DataError, match="names estimator 'oracle'"):
        AccuracyLUT.load(bad)


def test_teacher_checkpoint_of_another_format_version_is_refused(tmp_path):
    """A teacher file written by another nasq format version is one CheckpointError line, not a silent load."""
    import torch

    from nasq.bkd.teacher import TEACHER_FORMAT, TEACHER_VERSION, Teacher, load_teacher
    from nasq.errors import CheckpointError

    h = space_from_name("spaceevo-tiny").hyperspace
    state = Teacher(h, "mbv1").state_dict()
    good = {"format": TEACHER_FORMAT, "version": TEACHER_VERSION, "block_type": "mbv1", "state_dict": state}
    torch.save(good, tmp_path / "good.pt")
    load_teacher(tmp_path / "good.pt", h, "mbv1")
    for version in (TEACHER_VERSION + 1, True):
        torch.save({**good, "version": version}, tmp_path / "old.pt")
        with pytest.raises(CheckpointError, match="format version"):
            load_teacher(tmp_path / "old.pt", h, "mbv1")
