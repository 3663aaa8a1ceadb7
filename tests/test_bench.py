"""Readers, builder and validator against the published bench and broken copies of a synthetic one."""

import json
import shutil
import subprocess
import sys

import pytest
from PIL import Image

from cogip.data.layout import (BenchPaths, load_json, read_score_list, read_test_messages, read_test_split,
                              read_training_json)
from cogip.data.build import build_bench
from cogip.data.validate import validate_bench
from cogip.dims import DIMENSION_NAMES
from cogip.errors import CogipError


def test_published_training_counts(published):
    items = read_training_json(published / "cognition_training.json")
    assert len(items) == 3200
    assert {d: sum(i.dimension == d for i in items) for d in DIMENSION_NAMES} == dict.fromkeys(DIMENSION_NAMES, 800)
    first = items[0]
    assert (first.id, first.image, first.answer, first.label, first.score) == (
        "00000", "Aesthetics/000000.jpg", "medium 5.577", "medium", 5.577)
    assert not first.prompt.startswith("<image>")
    grpo = read_training_json(published / "training_grpo.json", grpo=True)
    assert [(g.image, g.answer) for g in grpo] == [(t.image, t.answer) for t in items]


def test_published_test_split(published):
    split = read_test_split(published)
    assert {d: len(v) for d, v in split.items()} == {"Aesthetics": 120, "Funniness": 199,
                                                     "Emotional_Valence": 700, "Memorability": 700}
    for dim, items in split.items():
        scores = dict(read_score_list(BenchPaths(published).scores(dim), dim))
        assert len(scores) - 800 == len(items)
        for item in items:  # every test score equals its image's score-list value
            assert item.score == pytest.approx(scores[item.image.split("/")[1]], abs=5e-4)
        assert items[0].image == f"{dim}/000800.jpg"


def test_builder_regenerates_published_files(published, tmp_path):
    paths = BenchPaths(tmp_path)
    for dim in DIMENSION_NAMES:  # the score lists are copied into a temporary folder only
        paths.scores(dim).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(BenchPaths(published).scores(dim), paths.scores(dim))
    counts = build_bench(tmp_path, n_train=800, prompts_from=published, check_images=False)
    assert counts["Funniness"] == {"train": 800, "test": 199}
    assert load_json(paths.training) == load_json(published / "cognition_training.json")
    assert load_json(paths.grpo) == load_json(published / "training_grpo.json")
    for dim in DIMENSION_NAMES:
        assert load_json(paths.messages(dim)) == load_json(BenchPaths(published).messages(dim))
        assert load_json(paths.test_scores(dim)) == load_json(BenchPaths(published).test_scores(dim))


def test_published_validates_with_synthetic_images(published, published_images):
    counts, problems = validate_bench(published, published_images)
    assert problems == []
    assert counts["Memorability"] == {"scores": 1500, "train": 800, "grpo": 800, "test": 700}


def test_synthetic_bench_layout(synth_bench):
    counts, problems = validate_bench(synth_bench)
    assert problems == []
    assert counts["Aesthetics"] == {"scores": 24, "train": 16, "grpo": 16, "test": 8}


def _broken(synth_bench, tmp_path):
    root = tmp_path / "bench"
    shutil.copytree(synth_bench, root)
    return root, BenchPaths(root)


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "cogip.cli", *map(str, args)], capture_output=True, text=True)


@pytest.mark.parametrize("breakage,expected", [
    ("corrupt_image", "Aesthetics/000003.jpg: item Aesthetics/000003.jpg (test"),
    ("missing_image", "Funniness/000001.jpg: item Funniness/000001.jpg (cognition_training.json item 00001): image not found"),
    ("short_scores", "4 messages but 3 scores"),
    ("out_of_range", "Memorability_scores.txt: item line 2: score 1.7 outside [0, 1]"),
    ("malformed_json", "cognition_training.json: malformed JSON at line 1"),
    ("wrong_label", "Aesthetics_scores.json: item 0: label"),
    ("duplicate_id", "training_grpo.json: item 1: duplicated id 00000 in Aesthetics"),
    ("score_mismatch", "differs from the score list's"),
])
def test_validator_reports_each_problem(synth_bench, tmp_path, breakage, expected):
    root, paths = _broken(synth_bench, tmp_path)
    if breakage == "corrupt_image":
        target = paths.images / "Aesthetics" / "000003.jpg"
        target.write_bytes(target.read_bytes()[:100])
        expected = "000003.jpg: item Aesthetics/000003.jpg"
    elif breakage == "missing_image":
        (paths.images / "Funniness" / "000001.jpg").unlink()
        expected = "Funniness/000001.jpg: item Funniness/000001.jpg (" 
    elif breakage == "short_scores":
        answers = json.loads(paths.test_scores("Funniness").read_text())
        paths.test_scores("Funniness").write_text(json.dumps(answers[:-5]))
        expected = f"{len(answers)} messages but {len(answers) - 5} scores"
    elif breakage == "out_of_range":
        lines = paths.scores("Memorability").read_text().splitlines()
        lines[1] = lines[1].split("\t")[0] + "\t1.7"
        paths.scores("Memorability").write_text("\n".join(lines) + "\n")
    elif breakage == "malformed_json":
        paths.training.write_text(paths.training.read_text()[:-40])
        expected = "cognition_training.json: malformed JSON"
    elif breakage == "wrong_label":
        answers = json.loads(paths.test_scores("Aesthetics").read_text())
        score = float(answers[0].split()[-1])
        answers[0] = ("very high " if score < 8 else "very low ") + f"{score:.3f}"
        paths.test_scores("Aesthetics").write_text(json.dumps(answers))
    elif breakage == "duplicate_id":
        data = json.loads(paths.grpo.read_text())
        data[1]["id"] = data[0]["id"]
        paths.grpo.write_text(json.dumps(data))
    elif breakage == "score_mismatch":
        data = json.loads(paths.training.read_text())
        label, score = data[2]["conversations"][1]["value"].rsplit(" ", 1)
        new = min(float(score) + 0.01, 10.0) if float(score) < 9 else float(score) - 0.01
        from cogip.dims import DIMENSIONS
        data[2]["conversations"][1]["value"] = DIMENSIONS["Aesthetics"].format_answer(new)
        paths.training.write_text(json.dumps(data))
    counts, problems = validate_bench(root)
    assert problems and any(expected in p for p in problems), problems
    assert all("\n" not in p for p in problems)
    run = _cli("data", "validate", root)
    assert run.returncode == 1 and expected in run.stderr and "Traceback" not in run.stderr


def test_readers_raise_one_clear_error(tmp_path, synth_bench):
    bad = tmp_path / "bad.json"
    bad.write_text('[{"id": "1", "image": ["Beauty/1.jpg"], "conversations": '
                   '[{"from": "human", "value": "<image> x"}, {"from": "gpt", "value": "high 7.000"}]}]')
    with pytest.raises(CogipError, match=r"bad.json: item 0: image path 'Beauty/1.jpg' does not start"):
        read_training_json(bad)
    paths = BenchPaths(synth_bench)
    with pytest.raises(CogipError, match="is not a Funniness image"):
        read_test_messages(paths.messages("Aesthetics"), paths.test_scores("Aesthetics"), "Funniness")
    with pytest.raises(CogipError, match="file not found"):
        load_json(tmp_path / "nope.json")


def test_cli_build_and_synth(tmp_path):
    run = _cli("data", "synth", tmp_path / "b", "--n", "10", "--n-train", "6")
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[1].split() == ["Aesthetics", "6", "4"]
    run = _cli("data", "build", tmp_path / "b", "--n-train", "8", "--style", "full")
    assert run.returncode == 0, run.stderr
    items = read_training_json(tmp_path / "b" / "cognition_training.json")
    assert len(items) == 32 and "Rate the aesthetic appeal" in items[0].prompt
    (tmp_path / "b" / "cognition" / "cognition_images" / "Funniness" / "000002.jpg").unlink()
    run = _cli("data", "build", tmp_path / "b")
    assert run.returncode == 2 and "Funniness/000002.jpg not found" in run.stderr and "Traceback" not in run.stderr
    assert len(read_training_json(tmp_path / "b" / "cognition_training.json")) == 32   # nothing half-written


def _tree(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_synthetic_images_of_varied_sizes(synth_bench, tmp_path):
    """--size-range: each image's width and height drawn from the range (real benches' images differ in
    size), from a stream of its own: the same for any number of processes; the square default unchanged."""
    from cogip.data.synth import synth_images_for
    for workers in (1, 2):
        assert synth_images_for(synth_bench, tmp_path / f"v{workers}", size_range=(40, 80), workers=workers) == 96
    one, two = _tree(tmp_path / "v1"), _tree(tmp_path / "v2")
    assert one == two
    sizes = [Image.open(tmp_path / "v1" / name).size for name in one]
    assert all(40 <= w <= 80 and 40 <= h <= 80 for w, h in sizes) and len(set(sizes)) > 40
    assert synth_images_for(synth_bench, tmp_path / "square", size=48, dims=["Aesthetics"], workers=1) == 24
    assert {Image.open(p).size for p in (tmp_path / "square" / "Aesthetics").iterdir()} == {(48, 48)}
    run = subprocess.run([sys.executable, "-m", "cogip.cli", "data", "synth", str(tmp_path / "x"), "--size-range", "40", "80"],
                         capture_output=True, text=True)
    assert run.returncode == 2 and run.stderr.strip().endswith("--size-range is for --from-bench (the embedded default's images are square)")
    run = subprocess.run([sys.executable, "-m", "cogip.cli", "data", "synth", str(tmp_path / "x"), "--from-bench",
                          str(synth_bench), "--size-range", "80", "40"], capture_output=True, text=True)
    assert run.returncode == 2 and run.stderr.strip().endswith("--size-range 80 40: needs 1 <= LOW <= HIGH")
    assert not (tmp_path / "x").exists() or not any((tmp_path / "x").rglob("*.jpg"))
    # --training-only: just the images the training file names, each as the full draw made it
    from cogip.data.layout import BenchPaths, read_training_json
    run = subprocess.run([sys.executable, "-m", "cogip.cli", "data", "synth", str(tmp_path / "t"), "--from-bench",
                          str(synth_bench), "--size-range", "40", "80", "--training-only"], capture_output=True, text=True)
    training = {item.image for item in read_training_json(BenchPaths(synth_bench).training)}
    assert run.returncode == 0 and run.stdout.startswith(f"drew {len(training)} synthetic images for the training file")
    assert 0 < len(training) < 96 and _tree(tmp_path / "t") == {name: one[name] for name in training}


def test_synthetic_images_do_not_depend_on_the_number_of_drawing_processes(synth_bench, tmp_path):
    from cogip.data.synth import synth_images_for
    for workers in (1, 2):   # 4 x 24 images: enough for the process pool (64 and up)
        assert synth_images_for(synth_bench, tmp_path / f"img{workers}", size=48, workers=workers) == 96
    one, two = _tree(tmp_path / "img1"), _tree(tmp_path / "img2")
    assert len(one) == 96 and one == two and len(set(one.values())) == 96
    assert sorted(one) == sorted(f"{d}/{i:06d}.jpg" for d in DIMENSION_NAMES for i in range(24))
    # an interrupted drawing resumes: an image missing is drawn again, byte for byte; one there is kept
    gone, kept = tmp_path / "img1" / "Memorability" / "000007.jpg", tmp_path / "img1" / "Aesthetics" / "000003.jpg"
    gone.unlink()
    kept.write_bytes(b"kept")
    assert synth_images_for(synth_bench, tmp_path / "img1", size=48, workers=2) == 96
    assert gone.read_bytes() == two["Memorability/000007.jpg"] and kept.read_bytes() == b"kept"
