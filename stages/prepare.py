"""DVC stage `prepare`: data/raw/<dataset> -> data/processed/<dataset> (splits, vocab, schema)."""

from deepfm.cli import run_stage
from deepfm.data.prepare import prepare

if __name__ == "__main__":
    run_stage(lambda config, args: prepare(config.data, config.feature))
