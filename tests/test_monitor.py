import csv
import time

import torch

from wmrepair.monitor import ResourceMonitor


def test_monitor_samples_and_writes_csv(tmp_path):
    with ResourceMonitor(interval=0.05, csv_path=tmp_path / "r.csv") as m:
        x = [bytearray(1 << 20) for _ in range(20)]  # some RSS
        time.sleep(0.3)
        del x
    rows = list(csv.DictReader(open(tmp_path / "r.csv")))
    assert len(rows) >= 4
    assert float(rows[0]["rss_mb"]) > 10
    s = m.summary()
    assert s["peak_rss_mb"] > 10
    if not torch.cuda.is_available():
        assert s["gpu"] == "no GPU" and s["peak_gpu_mem_mb"] == 0
