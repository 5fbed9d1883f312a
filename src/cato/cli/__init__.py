"""The ``cato`` command.

One module per command group: :mod:`~cato.cli.simulate` (``scenarios``, ``simulate``,
``policies``), :mod:`~cato.cli.capacity` (``capacity``, ``fronts``), :mod:`~cato.cli.serve`
(``serve``, ``profile``, ``engine``, ``demo``) and :mod:`~cato.cli.bench` (the ``bench`` group);
what they share is in :mod:`~cato.cli._common`. The commands are registered here, in the order
``cato --help`` lists them.
"""

from __future__ import annotations

import sys

import typer

from cato import __version__
from cato.cli._common import console
from cato.cli.bench import bench_app
from cato.cli.capacity import capacity, fronts
from cato.cli.plan import plan_cmd
from cato.cli.serve import demo, engine, profile_cmd, serve
from cato.cli.simulate import list_policies, scenarios, simulate

__all__ = ["app", "main"]

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="CATO: SLA-aware serving control plane for AI coding assistants.")
app.add_typer(bench_app, name="bench")


@app.command()
def version() -> None:
    """Print the version."""
    console.print(__version__)


app.command()(scenarios)
app.command()(simulate)
app.command()(capacity)
app.command()(fronts)
app.command("plan")(plan_cmd)
app.command("policies")(list_policies)
app.command()(serve)
app.command("profile")(profile_cmd)
app.command()(engine)
app.command()(demo)


def main() -> None:  # pragma: no cover
    app(sys.argv[1:])
