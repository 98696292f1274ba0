import pytest

from padnet_dist.cli import COMMANDS, main


def test_help_lists_every_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert name in out


def test_unknown_command_is_one_clear_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["trian"])
    assert exc.value.code == 2
    assert "unknown command 'trian'" in capsys.readouterr().err


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_module_exists_and_has_its_entry_points(name):
    import importlib

    module = importlib.import_module(COMMANDS[name][0])
    assert callable(module.add_arguments) and callable(module.run)


@pytest.mark.parametrize(
    "argv",
    [
        ["--config", "a.yaml", "phase=2", "--nproc", "2", "run.max_steps=3"],
        ["phase=2", "--nproc", "2", "--config", "a.yaml", "run.max_steps=3"],
        ["--nproc", "2", "--config", "a.yaml", "phase=2", "run.max_steps=3"],
    ],
)
def test_options_and_overrides_mix_in_any_order(argv):
    import argparse

    from padnet_dist.cli import _parse
    from padnet_dist.commands import train

    parser = argparse.ArgumentParser()
    train.add_arguments(parser)
    args = _parse(parser, argv)
    assert (args.config, args.nproc, args.overrides) == (["a.yaml"], 2, ["phase=2", "run.max_steps=3"])


REQUIRED_OPTIONS = {
    "train": [],
    "model": [],
    "ray-train": ["--num-workers", "1"],
    "eval": ["--checkpoint", "c"],
    "predict": ["--checkpoint", "c", "--input", "i", "--out", "o"],
    "report": ["runs/x"],  # RUN_DIR: the one positional that is not key=value
    "check-data": [],
    "pipeline": ["--backend", "local"],
}


def test_every_command_that_takes_overrides_is_in_the_table():
    import argparse
    import importlib

    with_overrides = set()
    for name, (module_name, _) in COMMANDS.items():
        parser = argparse.ArgumentParser()
        importlib.import_module(module_name).add_arguments(parser)
        if any(a.dest == "overrides" for a in parser._actions):
            with_overrides.add(name)
    assert with_overrides == set(REQUIRED_OPTIONS)


@pytest.mark.parametrize("name", sorted(REQUIRED_OPTIONS))
def test_every_command_with_overrides_takes_them_between_options(name):
    import argparse
    import importlib

    from padnet_dist.cli import _parse

    parser = argparse.ArgumentParser()
    importlib.import_module(COMMANDS[name][0]).add_arguments(parser)
    args = _parse(parser, ["a=1", *REQUIRED_OPTIONS[name], "--config", "x.yaml", "b=2"])
    assert args.overrides == ["a=1", "b=2"] and args.config == ["x.yaml"]
