"""``synthmed predict``: class probabilities of image files from a logged or registered model."""

from __future__ import annotations

import click

from synthmed.cli.options import BOOL


@click.command("predict")
@click.argument("paths", nargs=-1, required=True)
@click.option("--model-uri", required=True,
              help="models:/NAME@newest, models:/NAME/VERSION or runs:/RUN_ID/model (a synthmed model)")
@click.option("--output", type=click.Path(dir_okay=False), default=None,
              help="CSV to write (file, one probability column per class, predicted); default: print it")
@click.option("--skip-bad-images", type=BOOL, is_flag=False, flag_value="true", default="false", show_default=True,
              help="skip (and count) files that are not images instead of failing on the first")
def predict_command(paths: tuple[str, ...], model_uri: str, output: str | None, skip_bad_images: str) -> None:
    """Class probabilities for PATHS (image files, or folders of them) from a synthmed model."""
    import sys

    from synthmed.serving.predict import predict_files

    table, skipped = predict_files(model_uri, paths, skip_bad=skip_bad_images.lower() in ("true", "1", "yes"))
    if output:
        _write_csv(table, output)
        click.echo(f"{len(table)} images → {output}", err=True)
    else:
        table.to_csv(sys.stdout, index=False)
    if skipped:
        click.echo(f"skipped {len(skipped)} file(s) that are not readable images: " + ", ".join(skipped[:5])
                   + (" ..." if len(skipped) > 5 else ""), err=True)


def _write_csv(table: object, output: str) -> None:
    """All of the CSV or none: written beside the target, then renamed over it; a bad path is one clear error."""
    from pathlib import Path

    from synthmed.errors import SynthmedError
    from synthmed.paths import atomic_write, refuse_file_in_the_way, writing

    target = Path(output).expanduser()
    what, fix = f"prediction table (--output) {target}", "give a file in a folder this user can write: --output PATH"
    if target.is_dir():
        raise SynthmedError(f"{what} is a folder — {fix}")
    refuse_file_in_the_way(target.parent, f"folder of the prediction table (--output) {target.parent}", fix)
    with writing(what, fix, root=target.parent):
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(target, lambda fh: table.to_csv(fh, index=False), text=True)  # type: ignore[attr-defined]
