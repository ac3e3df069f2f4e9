"""What a crash leaves behind is collected (issue 21): the -m TAPE overlay
of an interrupted tape copy at the next mount, the temporary of an
interrupted put in a file:// pool at the next gc (once untouched for the
pool's stale period), and the manifest of an interrupted copy (see
test_shared_pool.py). Every wait is bounded.
"""

import os
import random
import time
from pathlib import Path

from conftest import TIME_SCALE
from test_tape import log_text, wait_for, wait_job, vpath

MiB = 1 << 20
VOL = "db"


def test_overlay_of_an_interrupted_tape_copy_goes_at_mount(mount_factory, tmp_path):
    pause = tmp_path / "pause"
    pause.mkdir()
    env = dict(os.environ, ACMFS_FAULT_PAUSE=f"{pause}:upload-deduped")
    m = mount_factory(name="m", env=env)
    m.create_volume(VOL, "8M")
    fd = os.open(vpath(m, "data"), os.O_WRONLY)
    os.pwrite(fd, random.Random(1).randbytes(8 * MiB), 0)
    os.fsync(fd)
    os.close(fd)
    v = int(m.parse_reply(m.ctl("backup -m TAPE", VOL))["version"])
    wait_for(lambda: (pause / "upload-deduped.reached").exists(), "the upload",
             60 * TIME_SCALE)
    overlays = list(Path(m.store, "vol").glob("*/overlay-*.img"))
    assert len(overlays) == 1, overlays
    m.kill9()
    m.env = dict(os.environ)
    m.start()
    assert not overlays[0].exists(), "the overlay outlived the crash"
    assert "leftover file" in log_text(m)
    assert m.read_info(f"volumes/{VOL}/history/{v}/info")["tape_status"] == "failed"
    # and the volume goes on: the next tape copy works
    v2 = int(m.parse_reply(m.ctl("backup -m TAPE", VOL))["version"])
    assert wait_job(m, v2)["tape_status"] == "succeeded"


def test_temporaries_of_interrupted_puts_go_at_gc(mount_factory, tmp_path):
    pool = tmp_path / "pool"
    pool.mkdir()
    m = mount_factory(name="m")
    m.ctl(f"pool create fp file://{pool} lock_stale=60")
    m.create_volume(VOL, "4M")
    m.ctl(f"tapepolicy {VOL} pool=fp")
    v = int(m.parse_reply(m.ctl("backup -m TAPE", VOL))["version"])
    assert wait_job(m, v)["tape_status"] == "succeeded"
    (pool / "packs").mkdir(exist_ok=True)
    old = pool / "packs" / ".0123456789abcdef0123456789abcdef.pack.tmp.00000000deadbeef"
    fresh = pool / "packs" / ".fedcba9876543210fedcba9876543210.pack.tmp.00000000feedf00d"
    mine = pool / "packs" / ".notes"  # not a put's temporary: left alone
    for p in (old, fresh, mine):
        p.write_bytes(b"x" * 4096)
    t = time.time() - 3600
    os.utime(old, (t, t))
    os.utime(mine, (t, t))
    r = m.parse_reply(m.ctl("pool gc fp grace=0"))
    assert r["temps_removed"] == "1", r
    assert not old.exists() and fresh.exists() and mine.exists()
