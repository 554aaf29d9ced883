"""One spelling per flag in every job command line: the renamed flags' old spellings and the old typed
booleans are gone (no shims)."""

from __future__ import annotations

import pytest


def test_one_spelling_per_flag_the_old_ones_are_errors(tmp_path, capsys):
    """No shims: the renamed flags' old spellings and the old typed booleans (``--x true``) are flag
    errors (exit 2), not warnings; the new spellings parse silently."""
    from workflows.batch_infer import parse_args as infer_args
    from workflows.preprocess import parse_args as preprocess_args
    from workflows.training.config import parse_config

    base = ["--model", "m", "--input", "i", "--out", "o"]
    new = infer_args(base + ["--test-clips", "2", "--test-crops", "1", "--no-eval"])
    assert (new.test_clips, new.test_crops, new.evaluate) == (2, 1, False)
    assert infer_args(base + ["--eval"]).evaluate and capsys.readouterr().err == ""
    pre = ["--dataset", "csv", "--videos", "v", "--annotations", "a", "--split", "train", "--out", "o"]
    assert preprocess_args(pre + ["--decode-device", "gpu"]).decode_device == "gpu"
    train = ["--shards", str(tmp_path), "--val-shards", str(tmp_path)]
    cfg = parse_config("ssv2", train + ["--no-register", "--resume"]).config
    assert (cfg.register, cfg.resume) == (False, True) and capsys.readouterr().err == ""
    for parse, argv in [(infer_args, base + ["--num-clips", "2"]), (infer_args, base + ["--num-crops", "1"]),
                        (infer_args, base + ["--eval", "false"]), (preprocess_args, pre + ["--device", "gpu"]),
                        (lambda a: parse_config("ssv2", a), train + ["--register", "false"]),
                        (lambda a: parse_config("ssv2", a), train + ["--resume=true"])]:
        with pytest.raises(SystemExit) as e:
            parse(argv)
        assert e.value.code == 2
        assert "error:" in capsys.readouterr().err
