"""``benchmarks/real/bench_real.py``'s localisation figure: is a defective image's highest
map pixel on its defect (within 8 px), or somewhere else that made the image rank high?"""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="module")
def bench(real_script):
    return real_script("bench_real")


def test_peak_on_defect_within_reach_only(bench):
    truth = np.zeros((80, 120), bool)
    truth[40:43, 60:63] = True  # a pit of 3 x 3 px
    heat = np.zeros(truth.shape)
    heat[10, 10] = 0.4  # soiling elsewhere, weaker
    heat[41, 61] = 0.9
    assert bench.peak_on_defect(heat, truth)
    heat[41, 61] = 0.0
    heat[48, 70] = 0.9  # 6 rows and 8 columns from the pit's nearest pixel: within 8 px
    assert bench.peak_on_defect(heat, truth)
    heat[48, 70] = 0.0
    heat[40, 71] = 0.9  # 9 columns away
    assert not bench.peak_on_defect(heat, truth)
    heat[40, 71] = 0.0  # the soiling is highest now
    assert not bench.peak_on_defect(heat, truth)
    assert not bench.peak_on_defect(heat, np.zeros_like(truth))  # no defect: never on it


def test_unannotated_training_images_keep_nothing_but_the_images(bench):
    from napari_bioanomaly.core.model import Dataset, ImageRecord, Region

    pit = Region(np.array([(0.0, 0.0), (0.0, 4.0), (4.0, 4.0)]), "pit")
    ds = Dataset(images=[ImageRecord("a.png", regions=[pit]),
                         ImageRecord("b.png", no_anomaly=True)], classes=["pit"])  # fmt: skip
    bare = bench.without_annotations(ds)
    assert [im.filename for im in bare.images] == ["a.png", "b.png"]
    assert all(not im.regions and not im.no_anomaly for im in bare.images)
    assert len(ds.images[0].regions) == 1  # the annotated dataset is left as it was
