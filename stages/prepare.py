"""DVC stage `prepare`: data/raw/<dataset> -> data/processed/<dataset> (splits, vocab, schema)."""

from deepfm.data.prepare import prepare
from deepfm.stage import run_stage

if __name__ == "__main__":
    run_stage(lambda config, args: prepare(config.data, config.feature))
