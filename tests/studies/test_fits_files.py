"""The committed fits files whose bootstrap intervals the GQA ladder READMEs quote are what their commands
write today (slow: 1,000 bootstrap refits each)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.studies.readme_numbers import REPO, argv, close, export, shows, text_of
from tests.studies.test_gqa_aspect_numbers import ASPECT, ASPECT_FITS
from tests.studies.test_gqa_heads_numbers import HEADS, HEADS_EXPORT, HEADS_FITS
from tests.studies.test_gqa_heads_steps_numbers import STEPS, STEPS_EXPORT, STEPS_FITS


@pytest.mark.slow
@pytest.mark.parametrize("study, exports, command", [
    (STEPS, [STEPS_EXPORT], STEPS_FITS["fits.json"]),
    (ASPECT, [], ASPECT_FITS["fits.json"]),
    (HEADS, [HEADS_EXPORT], HEADS_FITS["fits.json"]),
], ids=[STEPS, ASPECT, HEADS])
def test_fits_file_is_its_command(cli, tmp_path, study, exports, command):
    """The committed fits.json whose bootstrap intervals a README quotes is what the README's command writes
    today (1,000 bootstrap refits, seed 0): same candidates, parameters, R², intervals and draws."""
    paths = {}
    for cmd in exports:
        out = argv(cmd)[argv(cmd).index("--out") + 1]
        paths[out] = str(export(cli, study, cmd, tmp_path / Path(out).name))
    shows(study, command)
    args = argv(command, **paths)
    committed_path = Path(args[args.index("--out") + 1])
    args[args.index("--out") + 1] = str(tmp_path / "fits.json")
    cli(args)
    mine, theirs = json.loads((tmp_path / "fits.json").read_text()), json.loads(text_of(REPO / committed_path))
    assert {k: v for k, v in mine.items() if k not in ("source", "candidates")} == \
        {k: v for k, v in theirs.items() if k not in ("source", "candidates")}
    for a, b in zip(mine["candidates"], theirs["candidates"], strict=True):
        assert a["group"] == b["group"] and a["data_fingerprint"] == b["data_fingerprint"]
        for k in ("a", "b", "E"):
            assert close(a["params"][k], b["params"][k], 1e-6)
            assert all(close(x, y, 1e-6) for x, y in zip(a["ci95"][k], b["ci95"][k], strict=True)), (a["group"], k)
        assert a["n_used"] == b["n_used"] and a["n_failed"] == b["n_failed"]
