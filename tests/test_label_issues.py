"""Suspected label errors (trainkit.inference.label_issues), each kind on a hand-built image whose
detections are given: no model, so no float ties."""

from __future__ import annotations

import numpy as np

from trainkit.inference.label_issues import image_issues

SQUARE, CIRCLE = 0, 1


def issues(labelled: list[tuple[int, tuple]], detected: list[tuple[int, tuple, float]]):
    boxes = np.array([b for _, b in labelled], np.float32).reshape(-1, 4)
    labels = np.array([c for c, _ in labelled], np.int64)
    pred = np.array([b for _, b, _ in detected], np.float32).reshape(-1, 4)
    return image_issues(boxes, labels, pred, np.array([c for c, _, _ in detected], np.int64),
                        np.array([s for _, _, s in detected], np.float32))  # fmt: skip


def test_labels_the_model_agrees_with_raise_nothing() -> None:
    assert (
        issues(
            [(SQUARE, (10, 10, 50, 50)), (CIRCLE, (60, 60, 90, 95))],
            [(SQUARE, (11, 10, 50, 51), 0.9), (CIRCLE, (60, 61, 90, 95), 0.8), (CIRCLE, (0, 0, 5, 5), 0.1)],
        )
        == []
    )


def test_a_confident_detection_with_no_label_is_a_missing_label() -> None:
    [issue] = issues([(SQUARE, (10, 10, 50, 50))], [(SQUARE, (10, 10, 50, 50), 0.9), (CIRCLE, (60, 60, 90, 90), 0.8)])
    assert (issue.kind, issue.object, issue.proposal) == ("missing", -1, ((60.0, 60.0, 90.0, 90.0), CIRCLE))
    assert issue.score == np.float32(0.8)


def test_a_confident_box_half_over_a_label_of_another_class_is_not_a_missing_label() -> None:
    # IoU 0.4 with the labelled square: the model's misplaced box, not a second object; IoU 0.2: missing.
    square = (SQUARE, (0, 0, 40, 40))
    assert issues([square], [(SQUARE, (0, 0, 40, 40), 0.9), (CIRCLE, (0, 0, 16, 40), 0.9)]) == []
    [issue] = issues([square], [(SQUARE, (0, 0, 40, 40), 0.9), (CIRCLE, (32, 0, 72, 40), 0.9)])
    assert (issue.kind, issue.proposal) == ("missing", ((32.0, 0.0, 72.0, 40.0), CIRCLE))


def test_a_label_with_nothing_detected_near_it_is_spurious() -> None:
    [issue] = issues([(SQUARE, (10, 10, 50, 50)), (CIRCLE, (100, 100, 130, 130))],
                     [(SQUARE, (10, 10, 50, 50), 0.9), (CIRCLE, (101, 100, 130, 130), 0.02)])  # fmt: skip
    assert (issue.kind, issue.object, issue.proposal) == ("spurious", 1, None)
    assert abs(issue.score - 0.98) < 1e-6


def test_a_label_the_model_confidently_calls_another_class_is_a_swap() -> None:
    [issue] = issues([(SQUARE, (10, 10, 50, 50))], [(CIRCLE, (10, 11, 50, 50), 0.9), (SQUARE, (10, 10, 49, 50), 0.3)])
    assert (issue.kind, issue.object, issue.proposal) == ("swap", 0, ((10.0, 10.0, 50.0, 50.0), CIRCLE))
    assert abs(issue.score - 0.6) < 1e-6


def test_a_shifted_box_is_loose_and_its_detection_is_not_also_a_missing_label() -> None:
    # The object is at (10, 10, 50, 50); the label is shifted right by 40% of its width.
    [issue] = issues([(SQUARE, (26, 10, 66, 50))], [(SQUARE, (10, 10, 50, 50), 0.9)])
    iou = (50 - 26) / (66 - 10)
    assert (issue.kind, issue.object, issue.proposal) == ("loose", 0, ((10.0, 10.0, 50.0, 50.0), SQUARE))
    assert abs(issue.score - 0.9 * (1 - iou)) < 1e-6


def test_the_queue_puts_the_most_doubtful_image_first() -> None:
    from trainkit.inference.label_queue import queue, uncertainty
    from trainkit.inference.predictor import Prediction

    def answer(*scores: float) -> Prediction:
        n = len(scores)
        boxes = np.tile(np.array([[0, 0, 10, 10]], np.float32), (n, 1))
        return Prediction(20, 20, boxes, np.zeros(n, np.int64), np.array(scores, np.float32))

    assert uncertainty(np.array([0.5])) == (1.0, 1.0) and uncertainty(np.array([0.01])) == (0.0, 0.0)
    answers = [(0, answer(0.95, 0.99)), (1, answer(0.55)), (2, answer()), (3, answer(0.55, 0.6)), (4, answer(0.7))]
    assert [i for i, _, _ in queue(answers, 0)] == [3, 1, 4, 0, 2]  # the same top doubt (one float): two beat one
    assert [i for i, _, _ in queue(answers, 2)] == [3, 1]


def test_demo_label_noise_corrupts_a_share_of_the_objects_a_quarter_each_way(tmp_path) -> None:
    from ast import literal_eval

    import pandas as pd

    from trainkit.data.demo import write_demo_dataset

    clean = write_demo_dataset(tmp_path / "clean", images=40, seed=3)
    noisy = write_demo_dataset(tmp_path / "noisy", images=40, seed=3, label_noise=0.2)
    for image in sorted(clean.imageset_studio.rglob("*.*")):  # the same pictures, and the same true labels
        assert (noisy.imageset_studio / image.relative_to(clean.imageset_studio)).read_bytes() == image.read_bytes()
    assert (noisy.root / "labels_clean.csv").read_text() == clean.labels_csv.read_text()
    objects = sum(len(literal_eval(cell)) for cell in pd.read_csv(clean.labels_csv).label)
    changes = pd.read_csv(noisy.root / "label_noise.csv")
    assert len(changes) == round(0.2 * objects)
    assert changes.kind.value_counts().to_dict() == {
        k: n
        for k, n in zip(
            ("removed", "swapped", "shifted", "spurious"), [(len(changes) + 3 - i) // 4 for i in range(4)], strict=True
        )
    }
    after = sum(len(literal_eval(cell)) for cell in pd.read_csv(noisy.labels_csv).label)
    assert after == objects - (changes.kind == "removed").sum() + (changes.kind == "spurious").sum()
    swapped = changes[changes.kind == "swapped"]
    assert (swapped.type != swapped.true_type).all()
    shifted = changes[changes.kind == "shifted"]
    assert all(literal_eval(box)[0] != x or literal_eval(box)[2] != y
               for box, x, y in zip(shifted.true_box, shifted.bottomX, shifted.bottomY, strict=True))  # fmt: skip


def test_folds_split_every_image_once_and_repeat_with_the_seed(tmp_path) -> None:
    import pytest

    from trainkit.data.dataset import DataConfig, DatasetOptions, DatasetPair, load_dataset
    from trainkit.data.demo import write_demo_dataset
    from trainkit.errors import UserError
    from trainkit.training.folds import fold_datasets

    demo = write_demo_dataset(tmp_path, images=12, seed=3)
    dataset = load_dataset(DataConfig(train=DatasetPair(demo.imageset_studio, demo.labels_csv), val_fraction=0.25,
                                      options=DatasetOptions(datastore_name="")))  # fmt: skip

    def objects(records) -> dict[str, list[str]]:
        return {records.image_urls[i]: sorted(dataset.class_map.names[c] for c in records[i].class_ids)
                for i in range(len(records))}  # fmt: skip

    truth = objects(dataset.train) | objects(dataset.val)
    assert len(truth) == 12
    folds = fold_datasets(dataset, 3, seed=0)
    held = [objects(fold.val) for fold in folds]
    assert [len(h) for h in held] == [4, 4, 4] and {url: o for h in held for url, o in h.items()} == truth
    for fold, review in zip(folds, held, strict=True):
        assert objects(fold.train) | review == truth and not set(objects(fold.train)) & set(review)
        assert fold.class_map == dataset.class_map
    assert [objects(f.val) for f in fold_datasets(dataset, 3, seed=0)] == held
    assert [objects(f.val) for f in fold_datasets(dataset, 3, seed=1)] != held
    with pytest.raises(UserError, match="--folds 13: needs 2 to 12 folds for 12 images"):
        fold_datasets(dataset, 13, seed=0)


def test_merged_reviews_keep_the_folds_that_wrote_one_and_leave_no_stale_table(tmp_path) -> None:
    import pandas as pd

    from trainkit.training.folds import merge_reviews

    folders = [tmp_path / "fold1", tmp_path / "fold2"]
    for folder in folders:
        folder.mkdir()
    row = {"image_url": "a.png", "label": "[]", "label_confidence": "[]", "issue_score": 0.7, "issue_kinds": "[]",
           "issues": "[]"}  # fmt: skip
    pd.DataFrame([row]).to_csv(folders[0] / "label_issues.csv", index=False)  # fold 2's model was too weak
    merged = merge_reviews(folders, tmp_path / "label_issues.csv")
    assert merged is not None and pd.read_csv(merged).fold.tolist() == [1]
    (folders[0] / "label_issues.csv").unlink()
    assert merge_reviews(folders, tmp_path / "label_issues.csv") is None
    assert not (tmp_path / "label_issues.csv").exists()  # an earlier run's table is not this run's review
