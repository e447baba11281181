"""Render what loading a dataset found, as text for people and JSON for machines."""

from __future__ import annotations

from trainkit.data.checks import CheckOptions, CheckReport, check_records
from trainkit.data.dataset import Dataset, SetReport
from trainkit.data.object_sizes import ObjectSizes, object_sizes
from trainkit.data.records import Records
from trainkit.errors import BadRowPolicy

DEFAULT_IMAGE_SIZE = 512  # CommonParams' image_size


EXAMPLES = 3  # findings shown per check in the text summary (the JSON has them all)


def dataset_splits(dataset: Dataset) -> dict[str, Records]:
    """{"train": ..., "val": ...} (no "val" without validation images)."""
    return {"train": dataset.train} if dataset.val is None else {"train": dataset.train, "val": dataset.val}


def dataset_checks(dataset: Dataset, options: CheckOptions) -> CheckReport:
    """The checks of trainkit.data.checks over the dataset's training and validation images."""
    return check_records(dataset_splits(dataset), options)


def summary_json(
    dataset: Dataset, policy: BadRowPolicy, image_size: int = DEFAULT_IMAGE_SIZE, checks: CheckReport | None = None
) -> dict:
    """The `validate --json` document."""
    reason = dataset.usable(policy)
    sizes = _sizes(dataset, image_size)
    return {
        "usable": reason is None,
        "reason": reason,
        "on_bad_row": policy,
        "sets": [report.to_json() for report in dataset.reports],
        "split": dataset.split,
        "train_images": len(dataset.train),
        "val_images": len(dataset.val) if dataset.val is not None else 0,
        "classes": list(dataset.class_map.names),
        "object_sizes": sizes.to_json() if sizes is not None else None,
        "checks": checks.to_json() if checks is not None else None,
    }


def _sizes(dataset: Dataset, image_size: int) -> ObjectSizes | None:
    records = dataset.train if dataset.val is None else Records.concat([dataset.train, dataset.val])
    return object_sizes(records, image_size)


def summary_text(
    dataset: Dataset, policy: BadRowPolicy, image_size: int = DEFAULT_IMAGE_SIZE, checks: CheckReport | None = None
) -> str:
    """The `validate` summary."""
    lines: list[str] = []
    for report in dataset.reports:
        lines += _set_lines(report)
        lines.append("")
    lines.append(f"split      {dataset.split}")
    lines.append(f"classes    {len(dataset.class_map)}: {', '.join(dataset.class_map.names) or 'none'}")
    sizes = _sizes(dataset, image_size)
    if sizes is not None:
        lines.append(f"size       {sizes.line()}")
        if sizes.hint():
            lines.append(f"  hint: {sizes.hint()}")
    if checks is not None:
        lines += _check_lines(checks)
    reason = dataset.usable(policy)
    lines.append("result     usable" if reason is None else f"result     NOT usable: {reason}")
    return "\n".join(lines)


def _check_lines(checks: CheckReport) -> list[str]:
    counts = checks.counts()
    lines = ["checks     " + ", ".join(f"{name.replace('_', ' ')} {n}" for name, n in counts.items())]
    if not checks.hashed:
        lines.append("  (duplicates not looked for: --duplicates reads every image)")
    for name, n in counts.items():
        for finding in checks.of(name)[:EXAMPLES]:
            where = " ".join(filter(None, [finding.split, finding.image, f"and {finding.other}" if finding.other
                                           and name != "double_label" else ""]))  # fmt: skip
            lines.append(f"  {name.replace('_', ' ')}: {where}: {finding.detail}")
        if n > EXAMPLES:
            lines.append(f"  {name.replace('_', ' ')}: ... {n - EXAMPLES} more (--json FILE lists them all)")
    return lines


def _counts(counter: dict[str, int]) -> str:
    return ", ".join(f"{name} {n}" for name, n in sorted(counter.items(), key=lambda kv: (-kv[1], kv[0])))


def _set_lines(r: SetReport) -> list[str]:
    files = f"{len(r.files)} file{'s' if len(r.files) != 1 else ''}"
    extra = (
        f"; extra columns ignored: {', '.join(c or '(unnamed)' for c in r.extra_columns)}" if r.extra_columns else ""
    )
    lines = [
        f"[{r.name}]",
        f"label set  {r.labelset} ({files}, {r.rows} rows{extra})",
        f"image set  {r.imageset} (images under {r.image_root}: {r.datastore_reason})",
        *([f"image_url  {r.image_urls}"] if r.image_urls else []),
        *([f"format     {r.label_format}"] if r.label_format else []),
        f"images     {r.images_found} found, {r.images_missing} missing; {r.usable_images} usable, "
        f"{r.images_without_objects} of them without objects",
        f"box units  {r.box_units_reason}",
    ]
    kept = sum(r.objects_per_class.values())
    dropped = f"dropped: {_counts(r.dropped_objects)}" if r.dropped_objects else "none dropped"
    crowd = f"; {r.crowd_regions} crowd regions (evaluation only)" if r.crowd_regions else ""
    lines.append(f"objects    {kept} kept, {dropped}; {r.clipped_objects} clipped to the image{crowd}")
    width = max((len(name) for name in r.objects_per_class), default=0)
    lines += [f"  {name:<{width}}  {n}" for name, n in r.objects_per_class.items()]
    if r.box_size:
        lines.append(
            "box size   "
            + "; ".join(f"{k} {v['min']:.0f}/{v['median']:.0f}/{v['max']:.0f}" for k, v in r.box_size.items())
            + " px (min/median/max)"
        )
    if r.declared_in:
        absent = [name for name in r.declared_classes if name not in r.objects_per_class]
        note = f"; {len(absent)} with no object here" if absent else ""
        lines.append(f"declared   {len(r.declared_classes)} classes in {r.declared_in} (the class ids){note}")
    if r.orphan_label_files:
        lines.append(f"warning    {r.orphan_warning()}")
    if r.decoded_on_cpu:
        names = ", ".join(r.decoded_on_cpu[:3]) + (
            f" and {len(r.decoded_on_cpu) - 3} more" if len(r.decoded_on_cpu) > 3 else ""
        )
        lines.append(f"decoding   {len(r.decoded_on_cpu)} images train through the CPU fallback (DALI's decoder "
                     f"refuses them, Pillow reads them): {names}")  # fmt: skip
    lines.append(f"problems   {_counts(r.problems) or 'none'}")
    if r.hint:
        lines.append(f"  hint: {r.hint}")
    lines += [f"  {example}" for example in r.problem_examples]
    if sum(r.problems.values()) > len(r.problem_examples):
        lines.append(f"  ... and {sum(r.problems.values()) - len(r.problem_examples)} more")
    return lines
