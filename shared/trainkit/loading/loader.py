"""Training and evaluation batches from Records, with NVIDIA DALI, on a GPU or on the CPU.

`create_loader(records, config, device)` returns an iterable of batches (`trainkit.batch` says what
they hold and how a `LoaderConfig` asks for them); each `iter()` is one epoch.

Train mode shuffles with (seed, epoch), flips and crops around boxes; every process of a
distributed run reads a disjoint, equally long shard (up to count-1 images a epoch are left out so
the shards are equal, as torch's DistributedSampler does). Eval mode reads every sample exactly
once, in order, the last partial batch included, with no randomness.

With `config.tiles` (tasks that tile), training samples are an image's tiles and the whole image (each a
window decoded alone; an epoch is every window once, shuffled across images), and evaluation batches
hold every window of each image, cut from one decode of it (`DetectionBatch.windows` says where each
input lies in its image; trainkit.geometry.tiles).

A file that cannot be read or decoded follows the `on_bad_row` policy: `error` raises a
DatasetError naming it; `skip` leaves it out, counts it in `skipped`, and goes on.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch

from trainkit.batch import Batch, LoaderConfig
from trainkit.data.decode_check import DaliDecodeCheck, transcoded
from trainkit.data.records import Records
from trainkit.errors import DatasetError
from trainkit.geometry.tiles import tile_windows
from trainkit.geometry.windows import Window, sample_rng
from trainkit.loading.dali_pipeline import BadFile, BatchSource, Sample, loader_pipeline
from trainkit.loading.distributed import Shard, local_processes, usable_cores
from trainkit.loading.large_images import is_large, reduced
from trainkit.loading.resize import resize_into
from trainkit.params import TileSpec

log = logging.getLogger(__name__)

MAX_REBUILDS_PER_EPOCH = 100


def create_loader(
    records: Records, config: LoaderConfig, device: torch.device | str = "cpu", shard: Shard | None = None
) -> DaliLoader:
    """A DALI loader over `records` producing batches on `device` (cpu or cuda)."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return DaliLoader(records, config, device, shard or Shard())


class DaliLoader:
    """Iterable of batches; each iteration is one epoch. See the module docstring."""

    def __init__(self, records: Records, config: LoaderConfig, device: torch.device, shard: Shard) -> None:
        if config.batch_size < 1 or config.image_size < 8:
            raise ValueError("batch_size must be >= 1 and image_size >= 8")
        self.records = records
        self.config = config
        self.device = device
        self.shard = shard
        self.epoch = 0
        task = config.task
        self._units = task.units(records)
        self._task_image = task.unit_images(records)  # the image of each of the task's units (None: images)
        self._tiles = config.tiles if task.tiles else None
        # Training on tiles: each unit is one window of one image (see trainkit.geometry.tiles).
        self._unit_image, self._unit_window = _tile_units(records, self._tiles) if config.train else (None, None)
        if self._unit_image is not None:
            self._units = len(self._unit_image)
        if config.train and self._units < shard.count:
            raise DatasetError(f"{self._units} samples cannot be split over {shard.count} processes")
        self._source = BatchSource(self._load, config.batch_size, len(task.target_dtypes), config.on_bad_row == "skip")
        self._pipe = None
        self._clean_end = True
        self._start_batch = 0
        self._checker: DaliDecodeCheck | None = None
        self._cpu_decode: dict[int, str] = {}  # images DALI cannot decode (read through Pillow): DALI's reason

    def resume(self, epoch: int, batch: int) -> None:
        """Make the next iteration epoch `epoch`, starting at its batch `batch` (for resuming a run)."""
        self.epoch, self._start_batch = epoch, batch

    @property
    def skipped(self) -> dict[str, str]:
        """Files left out under on_bad_row=skip: path -> why."""
        return {self._path_of(position): reason for position, reason in self._source.bad.items()}

    def __len__(self) -> int:
        """Batches per epoch for this shard (before skipped files)."""
        return -(-len(self.epoch_order(self.epoch)) // self.config.batch_size)

    def epoch_order(self, epoch: int) -> np.ndarray:
        """The positions this shard reads in `epoch`."""
        n, shard = self._units, self.shard
        if not self.config.train:
            return np.arange(shard.index, n, shard.count, dtype=np.int64)
        order = np.random.default_rng([self.config.seed, epoch]).permutation(n)
        return order[: n - n % shard.count][shard.index :: shard.count]

    def __iter__(self) -> Iterator[Batch]:
        # Each iteration is the next epoch, however far the previous one was read.
        self._source_epoch, self.epoch = self.epoch, self.epoch + 1
        order = self.epoch_order(self._source_epoch)[self._start_batch * self.config.batch_size :]
        self._start_batch = 0
        self._source.start(order)
        if self._pipe is None or not self._clean_end:
            self._pipe = self._build()
        else:
            self._pipe.reset()
        self._clean_end = False
        rebuilds = 0
        while True:
            try:
                outputs = self._pipe.run()
            except StopIteration:
                break
            except Exception as exc:  # DALI raises plain RuntimeErrors for bad data
                rebuilds += 1
                self._recover(exc, rebuilds)
                continue
            positions = self._source.pending.popleft()
            yield self._batch(outputs, positions)
        self._clean_end = True

    def _build(self):
        c = self.config
        gpu = self.device.type == "cuda"
        # The processes on this machine share its cores (each also runs torch's own threads).
        threads = c.num_threads or max(1, min(8, usable_cores() // local_processes()))
        pipe = loader_pipeline(
            source=self._source,
            target_dtypes=c.task.target_dtypes,
            decode_device="mixed" if gpu else "cpu",
            batch_size=c.batch_size,
            num_threads=threads,
            device_id=self.device.index if gpu else None,
            seed=0,  # the pipeline has no random operators: augmentation is decided in `augment`
            prefetch_queue_depth=c.prefetch,
            exec_dynamic=True,
        )
        pipe.build()
        return pipe

    def _recover(self, exc: Exception, rebuilds: int) -> None:
        """After DALI failed on a batch: find the file(s) it cannot decode among those in flight, with
        its own decoder one file at a time; decode them with Pillow from now on when Pillow can (the
        same samples, windows and order), else name them (error) or leave them out (skip). The
        pipeline is rebuilt and the epoch goes on from the first batch not yet handed out."""
        if self._source.error is not None:
            bad = self._source.error
            raise DatasetError(f"{bad}; `trainkit validate` finds such files; pass --on-bad-row skip to leave them out")
        unconsumed = self._source.unconsumed()
        before = set(self._cpu_decode)
        verdicts: dict[int, str | None] = {}
        broken = {}
        for position in unconsumed.tolist():
            image = self._image_of(position)
            if image not in verdicts:
                # A large image reached DALI as Pillow's BMP (see _load): Pillow read it, DALI reads BMPs.
                settled = image in self._cpu_decode or is_large(*(int(v) for v in self.records.sizes[image]))
                verdicts[image] = None if settled else self._diagnose(image)
            if verdicts[image] is not None:
                broken[position] = verdicts[image]
        if not (self._cpu_decode.keys() - before or broken) or rebuilds > MAX_REBUILDS_PER_EPOCH:
            raise RuntimeError(f"the image pipeline failed on positions {unconsumed.tolist()[:8]}: {exc}") from exc
        if broken and self.config.on_bad_row == "error":
            reason = next(iter(broken.values()))
            raise DatasetError(
                f"{reason}; `trainkit validate --decode-check` finds such files; "
                "pass --on-bad-row skip to leave them out"
            )
        self._source.bad.update(broken)
        for reason in broken.values():
            log.warning("skipped: %s", reason)
        self._source.rewind()
        self._pipe = self._build()

    def _image_of(self, position: int) -> int:
        if self._unit_image is not None:
            return int(self._unit_image[position])
        return int(self._task_image[position]) if self._task_image is not None else position

    def _path_of(self, position: int) -> str:
        return str(self.records.paths[self._image_of(position)])

    @property
    def decoded_on_cpu(self) -> dict[str, str]:
        """Files DALI cannot decode, decoded with Pillow instead: path -> DALI's reason."""
        return {str(self.records.paths[image]): why for image, why in self._cpu_decode.items()}

    def _diagnose(self, image: int) -> str | None:
        """None when DALI decodes the image, or when Pillow does (then it is decoded on the CPU from
        now on); else why the file is unusable."""
        path = str(self.records.paths[image])
        try:
            data = np.fromfile(path, dtype=np.uint8)
        except OSError as exc:
            return f"image {path} cannot be read ({exc.strerror or exc})"
        if self._checker is None:
            gpu = self.device.type == "cuda"
            self._checker = DaliDecodeCheck("mixed" if gpu else "cpu", self.device.index if gpu else None)
        problem = self._checker.problem(data)
        if problem is None:
            return None
        try:
            transcoded(data.tobytes())
        except ValueError as why:
            return f"image {path} cannot be decoded ({why})"
        log.warning("image %s: DALI cannot decode it (%s); decoding it with Pillow instead", path, problem)
        self._cpu_decode[image] = problem
        return None

    def _load(self, position: int) -> Sample:
        """Read one sample's bytes; the task decides its window and targets, given the flip and crop drawn
        here (runs in DALI's feeding thread)."""
        records, config = self.records, self.config
        image = self._image_of(position)
        path = str(records.paths[image])
        try:
            encoded = np.fromfile(path, dtype=np.uint8)
        except OSError as exc:
            raise BadFile(position, f"image {path} cannot be read ({exc.strerror or exc})") from None
        if not len(encoded):
            raise BadFile(position, f"image {path} is empty")
        width, height = (int(v) for v in records.sizes[image])
        rng = sample_rng(config.seed, self._source_epoch, position) if config.train else None
        flip = bool(rng is not None and rng.random() < config.hflip)
        tile = None if self._unit_window is None else Window(*(int(v) for v in self._unit_window[position]))
        crop = rng if rng is not None and config.random_crop else None
        unit = image if tile is not None else position  # a tile's unit is its image
        window, targets = config.task.sample(records, unit, image, flip, crop, tile, config)
        corners = window.xyxy()[0].astype(np.float32)
        if is_large(width, height):
            # Evaluation cuts tiles from this one decode: it must keep `image_size` pixels across the smallest.
            try:
                encoded, window = reduced(encoded.tobytes(), width, height, window, self._decode_side(width, height))
            except ValueError as why:
                raise BadFile(position, f"image {path} cannot be decoded ({why})") from None
        elif image in self._cpu_decode:
            # Transcoded at each read, not kept: a whole set of such files would otherwise sit in memory.
            encoded = np.frombuffer(transcoded(encoded.tobytes()), np.uint8)
        return Sample(
            position,
            encoded,
            anchor=np.array([window.x0, window.y0], np.float32),
            shape=np.array([window.width, window.height], np.float32),
            flip=np.array(int(window.flip), np.int32),
            window=corners,
            targets=targets,
        )

    def _decode_side(self, width: int, height: int) -> int:
        """Pixels a large image's decode keeps across the window: `image_size`, or, when evaluation cuts
        tiles from one decode, enough for the smallest tile to keep `image_size`."""
        size = self.config.image_size
        if self._tiles is None or self.config.train:
            return size
        tiles = tile_windows(width, height, self._tiles)
        return math.ceil(size * max(max(width / t.width, height / t.height) for t in tiles))

    def _batch(self, outputs: tuple, positions: np.ndarray) -> Batch:
        images_tl, flips_tl, windows_tl = outputs[0], outputs[1], outputs[2]
        n = len(positions)
        image_ids = np.array([self._image_of(p) for p in positions.tolist()], np.int64)
        windows = np.stack([np.asarray(windows_tl[i], np.float32) for i in range(n)]).reshape(-1, 4)
        decoded = [_to_torch(images_tl[i], self.device) for i in range(n)]
        if self._tiles is not None and not self.config.train:
            return self._tiled_batch(decoded, windows, image_ids)
        images = self._resized(decoded, flips_tl)
        columns = outputs[3 : 3 + len(self.config.task.target_dtypes)]
        targets = [tuple(np.asarray(column[i]) for column in columns) for i in range(n)]
        return self.config.task.collate(images, targets, positions, image_ids, windows)

    def _resized(self, decoded: list[torch.Tensor], flips_tl=None) -> torch.Tensor:
        """The decoded (1, 3, h, w) windows resized to the model's square input (and mirrored where flipped)."""
        size = self.config.image_size
        # Channels-last: the uint8 resize kernel writes it directly, and convolutions take it as is.
        images = torch.empty(
            (len(decoded), 3, size, size), dtype=torch.uint8, device=self.device, memory_format=torch.channels_last
        )
        with _one_cpu_thread(self.device):
            for i, chw in enumerate(decoded):
                resize_into(chw, images[i : i + 1])
                if flips_tl is not None and int(np.asarray(flips_tl[i])):
                    images[i : i + 1] = images[i : i + 1].flip(-1)
        return images

    def _tiled_batch(self, decoded: list[torch.Tensor], windows: np.ndarray, image_ids: np.ndarray) -> Batch:
        """Evaluation on tiles: every window of each image, cut from its one decode, as consecutive inputs,
        with each window's targets as the task says."""
        crops, corners, owners, targets = [], [], [], []
        for chw, frame, image in zip(decoded, windows, image_ids.tolist(), strict=True):
            width, height = (int(v) for v in self.records.sizes[image])
            # The decode may be reduced (a large image): tile corners in its own pixels.
            fx, fy = chw.shape[-1] / float(frame[2] - frame[0]), chw.shape[-2] / float(frame[3] - frame[1])
            for tile in tile_windows(width, height, self._tiles):
                x0, y0 = math.floor(tile.x0 * fx), math.floor(tile.y0 * fy)
                x1 = max(x0 + 1, math.ceil((tile.x0 + tile.width) * fx))
                y1 = max(y0 + 1, math.ceil((tile.y0 + tile.height) * fy))
                crops.append(chw[:, :, y0:y1, x0:x1])
                corners.append(tile.xyxy()[0])
                owners.append(image)
                targets.append(self.config.task.tile_targets(self.records, image, tile, self.config))
        images = self._resized(crops)
        owned = np.array(owners, np.int64)
        return self.config.task.collate(images, targets, owned, owned, np.array(corners, np.float32).reshape(-1, 4))


def _tile_units(records: Records, tiles: TileSpec | None) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Training on tiles: (image of each unit, its window as x0, y0, width, height), the windows of
    every image in turn; (None, None) without tiling."""
    if tiles is None:
        return None, None
    images, windows = [], []
    for image, (width, height) in enumerate(records.sizes.tolist()):
        for window in tile_windows(width, height, tiles):
            images.append(image)
            windows.append((window.x0, window.y0, window.width, window.height))
    return np.array(images, np.int64), np.array(windows, np.int64).reshape(-1, 4)


@contextmanager
def _one_cpu_thread(device: torch.device) -> Iterator[None]:
    """Resize on one torch thread on the CPU: DALI's decoding threads have the other cores.

    Splitting a single image's resize over torch's thread pool gains little, and its workers spin
    waiting for the next parallel region while DALI needs those cores (measured on 2 cores: 4.0-4.8 ms
    of CPU per training image with two torch threads against 2.5-2.6 ms with one).
    """
    threads = torch.get_num_threads()
    if device.type != "cpu" or threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _to_torch(tensor, device: torch.device) -> torch.Tensor:
    """One DALI sample as a (1, 3, H, W) uint8 view or copy on `device`.

    On the CPU this is a zero-copy view of DALI's buffer, valid until the next pipeline run; the
    caller resizes it into its own tensor straight away.
    """
    if device.type == "cpu":
        hwc = torch.from_numpy(np.asarray(tensor))
    else:
        from nvidia.dali.plugin.pytorch import feed_ndarray

        hwc = torch.empty(tuple(tensor.shape()), dtype=torch.uint8, device=device)
        feed_ndarray(tensor, hwc, cuda_stream=torch.cuda.current_stream(device))
    return hwc.permute(2, 0, 1).unsqueeze(0)
