"""The edge's enhancement store fails: unwritable, disk full, or impossible to open at start.

Real ``layercast edge`` processes, running as root, so permissions cannot make a directory
unwritable. The faults are made honestly instead:

* unwritable: the store's directory is replaced by a regular file while the edge runs, so every
  write fails with ENOTDIR, until the directory is put back;
* disk full: the temporary files the edge is about to write for three upcoming frames are made
  symbolic links to ``/dev/full``, whose writes fail with ENOSPC (the kernel's own "no space left
  on device"); the store removes them as it cleans up after each failed write;
* cannot open: a file sits where the store directory should be when the edge starts.

What must hold each time: a clear error in the edge's log, ``layercast_edge_enhancement_store_healthy``
at 0 and ``layercast_edge_errors_total{kind="enhancement_store"}`` counting, enhancement requests
for the affected frames answered STORE_ERROR (UNAVAILABLE at the cloud, naming the cause), and
the base stream unaffected: every frame gets its result. When the fault goes, the store works again.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from layercast.edge.enhancement_store import temp_name
from layercast.shared.rpc import operator_pb2, operator_pb2_grpc
from tests.cloud.conftest import OPERATOR_METADATA
from tests.e2e.conftest import HEIGHT, WIDTH
from tests.e2e.probes import results, sample, when_logged
from tests.e2e.services import CloudProcess, EdgeProcess, Model, free_port, wait_until

TOKENS = {cam: f"disk-{cam}-" + "d" * 24 for cam in ("d-1", "d-2")}
FAILED = "enhancement store failed"
BACK = "enhancement store works again"


def enhance(target: str, cam: str, seq: int) -> operator_pb2.EnhanceResponse | grpc.RpcError:
    with grpc.insecure_channel(target) as ch:
        try:
            return operator_pb2_grpc.OperatorStub(ch).Enhance(
                operator_pb2.EnhanceRequest(frame=operator_pb2.FrameRef(camera_id=cam, sequence=seq)),
                metadata=OPERATOR_METADATA,
                timeout=60,
            )
        except grpc.RpcError as exc:
            return exc


def assert_store_error(answer: object, *words: str) -> str:
    assert isinstance(answer, grpc.RpcError), f"expected a failure, got {type(answer).__name__}"
    details = answer.details() or ""
    assert answer.code() == grpc.StatusCode.UNAVAILABLE, details
    assert "enhancement store" in details and all(w in details for w in words), details
    return details


def assert_enhanced(answer: object) -> None:
    assert isinstance(answer, operator_pb2.EnhanceResponse), answer
    assert answer.enhancement_bytes > 0 and answer.reconstruction.png


class Edge:
    """One edge process and its metrics."""

    def __init__(self, work: Path, model: Model, cloud: CloudProcess, cam: str, seed: int) -> None:
        self.cam = cam
        self.port = free_port()
        self.proc = EdgeProcess(
            work / cam,
            model,
            cam,
            TOKENS[cam],
            cloud.target,
            f"synthetic:{seed}",
            {"source": {"width": WIDTH, "height": HEIGHT, "fps": 5.0}, "metrics_port": self.port},
        )
        self.store_dir = self.proc.data_dir / "enhancement" / cam

    def metric(self, name: str, **labels: str) -> float | None:
        return sample(self.port, f"layercast_edge_{name}", {"camera": self.cam, **labels})

    def healthy(self) -> float | None:
        return self.metric("enhancement_store_healthy")

    def store_errors(self) -> float:
        return self.metric("errors_total", kind="enhancement_store") or 0.0

    def last_sequence(self) -> int:
        """The newest sequence issued (no frame is dropped in these tests)."""
        return int(self.metric("frames_queued_total") or 0)


@pytest.fixture
def cloud(tmp_path: Path, model: Model) -> Iterator[CloudProcess]:
    proc = CloudProcess(tmp_path / "cloud", model, TOKENS)
    try:
        proc.launch()
        yield proc
    finally:
        proc.cleanup()


@pytest.mark.skipif(not Path("/dev/full").is_char_device(), reason="no /dev/full to fill the disk with")
def test_enhancement_store_faults_are_reported_and_the_base_stream_goes_on(
    cloud: CloudProcess, model: Model, tmp_path: Path
) -> None:
    live = Edge(tmp_path, model, cloud, "d-1", 1)  # faults while running
    late = Edge(tmp_path, model, cloud, "d-2", 2)  # no store at start
    late.store_dir.parent.mkdir(parents=True)
    late.store_dir.write_text("a file where the store directory should be")
    edges = (live, late)
    try:
        for e in edges:
            e.proc.start()
        cloud.wait_serving()
        for e in edges:
            results(cloud.target, e.cam, 3, timeout=180)

        # -- d-2: the store could not be opened at start ------------------------------------------
        err = late.proc.stderr()
        assert "running without an enhancement store" in err and "cannot open" in err, err[-2000:]
        assert late.healthy() == 0 and late.store_errors() >= 1
        assert_store_error(enhance(cloud.target, "d-2", 2), "cannot open")
        late.store_dir.unlink()  # fixed: the edge opens it on its next try (every 5 s)
        when_logged(late.proc.stderr, "enhancement layers are kept again", 0, timeout=30)
        wait_until(lambda: late.healthy() == 1, 10, "d-2's store to be healthy")
        after_open = late.last_sequence() + 2
        results(cloud.target, "d-2", after_open, timeout=60)
        assert_enhanced(enhance(cloud.target, "d-2", after_open))

        # -- d-1, healthy: a frame is enhanced --------------------------------------------------------
        assert live.healthy() == 1 and live.store_errors() == 0
        assert_enhanced(enhance(cloud.target, "d-1", 2))

        # -- d-1, unwritable: the directory becomes a file -----------------------------------------
        away = live.store_dir.with_name("d-1.away")
        live.store_dir.rename(away)
        live.store_dir.write_text("not a directory any more")
        when_logged(live.proc.stderr, FAILED, 0, timeout=30)
        unwritable = int(re.findall(r"cannot write frame (\d+)", live.proc.stderr())[0])
        wait_until(lambda: live.healthy() == 0, 10, "d-1's store to be reported unhealthy")
        results(cloud.target, "d-1", unwritable + 5, timeout=60)  # the base stream goes on
        unwritable_msg = assert_store_error(enhance(cloud.target, "d-1", unwritable), "Not a directory")
        live.store_dir.unlink()
        away.rename(live.store_dir)
        when_logged(live.proc.stderr, BACK, 0, timeout=30)
        assert live.healthy() == 1
        errors_unwritable = live.store_errors()  # one per frame written while it was a file
        assert errors_unwritable >= 5

        # -- d-1, disk full: the next three temporary files lead to /dev/full ----------------------
        full_from = live.last_sequence() + 8  # ahead of the encoder (5 fps, batches of 4)
        links = [live.store_dir / temp_name(seq, live.proc.pid) for seq in range(full_from, full_from + 3)]
        for link in links:
            link.symlink_to("/dev/full")
        when_logged(live.proc.stderr, FAILED, 1, timeout=30)
        when_logged(live.proc.stderr, BACK, 1, timeout=30)
        full_line = [ln for ln in live.proc.stderr().splitlines() if FAILED in ln][1]
        assert f"disk full writing frame {full_from}" in full_line, full_line
        assert not any(os.path.lexists(link) for link in links)  # cleaned up after each failure
        assert stat.S_ISCHR(os.stat("/dev/full").st_mode)
        assert live.store_errors() == errors_unwritable + 3
        results(cloud.target, "d-1", full_from + 1, timeout=60)  # its base is in the cloud (an edge can lag)
        full_msg = assert_store_error(enhance(cloud.target, "d-1", full_from + 1), "No space left on device")

        # -- d-1, recovered: old and new frames are enhanced again ----------------------------------
        assert live.healthy() == 1
        results(cloud.target, "d-1", full_from + 4, timeout=60)
        assert_enhanced(enhance(cloud.target, "d-1", full_from + 4))
        assert_enhanced(enhance(cloud.target, "d-1", 3))  # kept before the directory went away
        for e in edges:
            e.proc.request_stop()  # both stop at once
        runs = {e.cam: e.proc.finish(timeout=60) for e in edges}
        delivered = {
            e.cam: len(results(cloud.target, e.cam, runs[e.cam].stats["frames_queued"])) for e in edges
        }
    except BaseException:
        print(cloud.describe(), *(e.proc.describe() for e in edges), sep="\n")
        raise
    finally:
        for e in edges:
            e.proc.cleanup()

    s = runs["d-1"].stats
    print(
        f"\nFIGURE store faults: d-1 captured {s['frames_captured']}, results {delivered['d-1']}, "
        f"store errors {s['store_errors']} (unwritable {int(errors_unwritable)}, disk full 3), "
        f"requests {s['enhancement_requests']} of which STORE_ERROR {s['enhancement_unavailable']}; "
        f"d-2 results {delivered['d-2']}, store errors before it opened {runs['d-2'].stats['store_errors']}"
        f"\n  {unwritable_msg}\n  {full_msg}"
    )
    for cam, run in runs.items():
        st = run.stats
        assert run.returncode == 0, cam
        # every frame captured got its result: the store's troubles did not touch the base stream
        assert (
            st["frames_dropped_capture"] == st["frames_dropped_outbox"] == st["frames_lost_outbox_error"] == 0
        )
        assert st["frames_queued"] == st["frames_acked"] == delivered[cam], st
    assert s["enhancement_unavailable"] == {"store_error": 2} and s["enhancement_served"] == 3
    # one error per frame not kept; answering for such a frame later is not a new store failure
    assert s["store_errors"] == errors_unwritable + 3 and s["store_healthy"]
    assert runs["d-2"].stats["enhancement_unavailable"] == {"store_error": 1}
